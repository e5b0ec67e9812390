"""What a new call's first webhook costs, next to a naive Flask handler doing the least.

Run: python tests/bench/bench_webhook_cost.py [--seconds 10] [--connections 16] [--rounds 2]

Side by side in one run, each on waitress (16 threads) in its own process on loopback:

- ours: `ivr serve` with a fresh database (`ivr init-db --demo`) at an open-hours instant;
- naive: a Flask app whose /twilio/voice does what any webhook must and nothing more:
  the same X-Twilio-Signature check (twilio's RequestValidator), one SQLite INSERT of the
  call (WAL, synchronous=NORMAL, one connection per thread), a fixed TwiML answer.

wrk (Debian's package) sends POST /twilio/voice with 16 connections for `--seconds`,
every request a NEW call (its own CallSid, signed for that server's URL), so what is
measured is the first webhook of a call: the exactly-once store, the call row, its
timeline events, the flow's first turn, TwiML and the log line. The rounds alternate the
two servers; the best round of each is compared (the machine is shared, noise only ever
slows a run down), and the median of the rounds' own ratios (both servers run back to
back in a round, so a slow spell of the machine touches both). Printed: requests/s of
each, the ratios ours/naive (goal: at least 0.5),
and the SQL statements our first webhook runs (traced in-process).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ivr.emulator import new_sid, sign  # noqa: E402

TOKEN = "bench-auth-token-0123456789abcdef"  # noqa: S105 - a throwaway local token
OPEN_NOW = "2026-11-26T12:00:00+03:00"
TARGET_RATIO = 0.5

NAIVE_APP = textwrap.dedent(
    """
    import sqlite3, sys, threading
    import waitress
    from flask import Flask, Response, abort, request
    from twilio.request_validator import RequestValidator

    db_path, token, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    setup = sqlite3.connect(db_path)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS calls (call_sid TEXT PRIMARY KEY, "
                  "from_number TEXT, to_number TEXT, status TEXT)")
    setup.commit()
    local = threading.local()
    validator = RequestValidator(token)
    app = Flask("naive")
    TWIML = ('<?xml version="1.0" encoding="UTF-8"?><Response><Gather action="/twilio/gather">'
             '<Say>Hello</Say></Gather></Response>')

    def conn():
        if getattr(local, "conn", None) is None:
            local.conn = sqlite3.connect(db_path, timeout=5)
            local.conn.execute("PRAGMA synchronous = NORMAL")
        return local.conn

    @app.post("/twilio/voice")
    def voice():
        url = request.url
        if not validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
            abort(403)
        with conn() as c:
            c.execute("INSERT INTO calls VALUES (?, ?, ?, ?)", [request.form["CallSid"],
                      request.form.get("From"), request.form.get("To"), "ringing"])
        return Response(TWIML, mimetype="application/xml")

    waitress.serve(app, host="127.0.0.1", port=port, threads=16, _quiet=True)
    """
)

WRK_SCRIPT = textwrap.dedent(
    """
    -- Each wrk thread sends its own file of pre-signed requests, each a new call, in order.
    local threads = {}
    function setup(thread)
      thread:set("id", #threads)
      table.insert(threads, thread)
    end
    function init(args)
      requests = {}
      local file = io.open(args[1] .. "." .. id)
      for line in file:lines() do
        local signature, body = line:match("([^\\t]*)\\t(.*)")
        requests[#requests + 1] = wrk.format("POST", "/twilio/voice", {
          ["Content-Type"] = "application/x-www-form-urlencoded",
          ["X-Twilio-Signature"] = signature,
        }, body)
      end
      file:close()
      counter = 0
    end
    function request()
      counter = counter + 1
      if counter > #requests then counter = 1 end
      return requests[counter]
    end
    function done(summary, latency, requests_)
      io.write(string.format("RESULT %d %d %d\\n", summary.requests, summary.errors.status,
        summary.duration))
    end
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_up(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def write_requests(prefix: Path, port: int, count: int, threads: int) -> None:
    """`count` signed first-webhook requests for the server on `port`, one file per thread."""
    url = f"http://127.0.0.1:{port}/twilio/voice"
    files = [open(f"{prefix}.{index}", "w") for index in range(threads)]  # noqa: SIM115
    try:
        for index in range(count):
            params = {
                "CallSid": new_sid("CA"),
                "AccountSid": "AC" + "0" * 32,
                "From": f"+7916{index:07d}",
                "To": "+78002345555",
                "CallStatus": "ringing",
                "ApiVersion": "2010-04-01",
                "Direction": "inbound",
            }
            body = urllib.parse.urlencode(params)
            files[index % threads].write(f"{sign(TOKEN, url, params)}\t{body}\n")
    finally:
        for file in files:
            file.close()


def run_wrk(port: int, prefix: Path, script: Path, seconds: int, connections: int) -> float:
    """Requests per second wrk got (non-2xx answers count as a failure of the bench)."""
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/twilio/voice",
            "--",
            str(prefix),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+)", output)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    requests, errors, micros = (int(value) for value in match.groups())
    if errors:
        raise RuntimeError(f"{errors} non-2xx answers out of {requests}:\n{output}")
    return requests / (micros / 1e6)


def count_statements() -> list[str]:
    """The SQL our first webhook of a new call runs (traced in-process, test client)."""
    import ivr.db
    from ivr.demo import seed_demo_roster
    from ivr.hours import parse_instant
    from ivr.web.app import create_app

    statements: list[str] = []
    original = ivr.db.connect

    def traced(*args, **kwargs):
        db = original(*args, **kwargs)
        db.conn.set_trace_callback(statements.append)
        return db

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "ivr.sqlite3")
        app = create_app({"db_path": path, "auth_token": TOKEN, "now": parse_instant(OPEN_NOW)})
        with original(path) as db:
            seed_demo_roster(db)
        ivr.db.connect = traced  # what the request's get_db() opens its connection with
        try:
            params = {"CallSid": new_sid("CA"), "From": "+79161234567", "To": "+78002345555"}
            url = "http://localhost/twilio/voice"
            client = app.test_client()
            warm = {**params, "CallSid": new_sid("CA")}  # the thread's connection opens here
            client.post(
                "/twilio/voice", data=warm, headers={"X-Twilio-Signature": sign(TOKEN, url, warm)}
            )
            statements.clear()
            response = client.post(
                "/twilio/voice",
                data=params,
                headers={"X-Twilio-Signature": sign(TOKEN, url, params)},
            )
            assert response.status_code == 200, response.status_code
        finally:
            ivr.db.connect = original
        app.extensions["ivr.speech"].close()
    return statements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    ivr_command = Path(sys.executable).with_name("ivr")
    folder = Path(tempfile.mkdtemp(prefix="ivr-webhook-cost-"))
    script = folder / "requests.lua"
    script.write_text(WRK_SCRIPT)
    naive_script = folder / "naive.py"
    naive_script.write_text(NAIVE_APP)
    ours_port, naive_port = free_port(), free_port()
    env = {
        **os.environ,
        "IVR_DB": str(folder / "ours.sqlite3"),
        "IVR_TWILIO_AUTH_TOKEN": TOKEN,
        "IVR_NOW": OPEN_NOW,
        "IVR_SECRET_KEY": "b" * 64,
    }
    # Enough new calls for the longest run at well over the expected rate.
    per_round = 4000 * args.seconds
    subprocess.run(
        [str(ivr_command), "init-db", "--demo"], env=env, check=True, capture_output=True
    )
    servers = [
        subprocess.Popen(  # noqa: S603
            [str(ivr_command), "serve", "--port", str(ours_port), "--threads", "16"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                str(naive_script),
                str(folder / "naive.sqlite3"),
                TOKEN,
                str(naive_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    results: dict[str, list[float]] = {"ours": [], "naive": []}
    try:
        wait_up(ours_port)
        wait_up(naive_port)
        servers_in_turn = [("naive", naive_port), ("ours", ours_port)]
        for number in range(args.rounds):
            # Each round runs both, back to back, first one then the other in turn.
            for name, port in servers_in_turn[:: 1 if number % 2 == 0 else -1]:
                prefix = folder / f"{name}-{number}"
                write_requests(prefix, port, per_round, threads=2)
                rate = run_wrk(port, prefix, script, args.seconds, args.connections)
                results[name].append(rate)
                print(f"round {number + 1}: {name:>5} {rate:7.0f} requests/s", flush=True)
            pair = results["ours"][-1] / results["naive"][-1]
            print(f"round {number + 1}: ratio {pair:.2f}", flush=True)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    statements = count_statements()
    best_ours, best_naive = max(results["ours"]), max(results["naive"])
    ratio = best_ours / best_naive
    paired = statistics.median(
        ours / naive for ours, naive in zip(results["ours"], results["naive"], strict=True)
    )
    print()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    )
    print(
        f"wrk: 2 threads, {args.connections} connections, {args.seconds} s, each request a new call"
    )
    print(f"naive Flask handler (signature + 1 INSERT): {best_naive:.0f} requests/s (best round)")
    print(f"ivr serve, first webhook of a new call:     {best_ours:.0f} requests/s (best round)")
    print(f"ratio ours / naive: {ratio:.2f} (goal >= {TARGET_RATIO})")
    print(f"median of the rounds' ratios (each round both servers back to back): {paired:.2f}")
    print(f"SQL statements in our first webhook: {len(statements)}")
    for statement in statements:
        print("   ", " ".join(statement.split())[:110])
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
