"""Benchmark the operator console on a big call log: 100 000 calls by default.

Run: python tests/bench/bench_console.py [--calls 100000] [--requests 50] [--http]

Seeds a temporary database (calls, their timelines, tickets, notes) with executemany, signs
in, then times the pages operators use most: the first page of the call log and a search by
order number (the targets: p95 <= 200 ms), plus a few others for information. Requests go
through Flask's test client by default, or over real HTTP to waitress with --http.
Prints p50/p95/max per page. Takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import random
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ivr import db as database  # noqa: E402
from ivr.accounts import hash_password  # noqa: E402
from ivr.db import operators as roster_store  # noqa: E402
from ivr.tickets import new_ticket_number  # noqa: E402
from ivr.web.app import create_app  # noqa: E402

TARGET_MS = 200.0
OUTCOMES = (
    ["connected"] * 50
    + ["queued"] * 10
    + ["after_hours_callback"] * 10
    + ["hung_up_in_menu"] * 15
    + ["status_told"] * 10
    + ["hung_up_in_queue"] * 5
)
CATEGORIES = ("delivery", "returns", "payment", "quality", "other")
OPERATORS = (
    ("Иванова Мария Сергеевна", "ivanova", "admin"),
    ("Петров Алексей Николаевич", "petrov", "operator"),
    ("Смирнова Ольга Викторовна", "smirnova", "operator"),
)
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway account in a temporary database


def seed(db_path: str, calls: int, rng: random.Random) -> dict[str, list[str]]:
    """Fill a fresh database; returns sample order numbers, tickets and caller digits."""
    db = database.connect(db_path)
    database.migrate(db)
    created = database.timestamp(datetime.now(UTC))
    password_hash = hash_password(PASSWORD)
    for index, (name, login, role) in enumerate(OPERATORS, start=1):
        roster_store.insert_operator(
            db,
            {
                "full_name": name,
                "login": login,
                "role": role,
                "password_hash": password_hash,
                "languages": "ru,en",
                "endpoint": f"+7999000000{index}",
                "created_at": created,
            },
        )
    db.conn.commit()
    now = datetime.now(UTC)
    call_rows, event_rows, ticket_rows, note_rows = [], [], [], []
    samples: dict[str, list[str]] = {"orders": [], "tickets": [], "callers": []}
    tickets_seen: set[str] = set()
    for index in range(calls):
        started = now - timedelta(seconds=rng.randrange(90 * 86400))
        call_sid = f"CA{index:032x}"
        caller = "+7916" + f"{rng.randrange(10**7):07d}"
        outcome = rng.choice(OUTCOMES)
        has_ticket = outcome not in ("hung_up_in_menu", "status_told")
        order = f"{rng.randrange(10**9, 10**10)}" if has_ticket and rng.random() < 0.8 else None
        operator_id = rng.randrange(1, len(OPERATORS) + 1) if has_ticket else None
        category = rng.choice(CATEGORIES) if has_ticket else None
        ticket = None
        if has_ticket:
            ticket = new_ticket_number(lambda n: rng.randrange(n))
            while ticket in tickets_seen:
                ticket = new_ticket_number(lambda n: rng.randrange(n))
            tickets_seen.add(ticket)
        stamp = database.timestamp(started)
        ended = database.timestamp(started + timedelta(seconds=90))
        call_rows.append(
            (
                call_sid,
                "domestic" if rng.random() < 0.8 else "international",
                "+78002345555",
                caller,
                "ru",
                stamp,
                ended,
                ended,
                "completed",
                90,
                "ended",
                outcome,
                order,
                category,
                ticket,
                operator_id,
                OPERATORS[operator_id - 1][0] if operator_id else None,
                int(outcome == "after_hours_callback"),
            )
        )
        for seq in range(10):
            event_rows.append(
                (
                    call_sid,
                    seq,
                    stamp,
                    "prompt" if seq % 2 else "step",
                    "main_menu",
                    '{"texts": ["Здравствуйте! Вы позвонили в службу поддержки."]}',
                )
            )
        if ticket:
            ticket_rows.append(
                (
                    ticket,
                    call_sid,
                    caller,
                    order,
                    category,
                    rng.choice(("open", "in_progress", "resolved")),
                    operator_id,
                    OPERATORS[operator_id - 1][0],
                    int(outcome == "after_hours_callback"),
                    stamp,
                    ended,
                    ended,
                    "Курьер не привёз заказ, прошу вернуть деньги" if rng.random() < 0.3 else None,
                )
            )
            if rng.random() < 0.1:
                note_rows.append((ticket, operator_id, "Позвонил клиенту, ждём курьера.", ended))
            if order and len(samples["orders"]) < 500:
                samples["orders"].append(order)
            if len(samples["tickets"]) < 500:
                samples["tickets"].append(ticket)
        if len(samples["callers"]) < 500:
            samples["callers"].append(caller[-4:])
    with database.write_transaction(db):
        db.conn.executemany(
            "INSERT INTO calls (call_sid, line, to_number, from_number, language, started_at, "
            "updated_at, ended_at, status, duration, step, outcome, order_number, category, "
            "ticket_number, operator_id, operator_name, after_hours) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            call_rows,
        )
        db.conn.executemany(
            "INSERT INTO events (call_sid, seq, at, kind, step, detail) VALUES (?, ?, ?, ?, ?, ?)",
            event_rows,
        )
        db.conn.executemany(
            "INSERT INTO tickets (number, call_sid, caller_number, order_number, category, "
            "status, operator_id, operator_name, after_hours, created_at, due_at, updated_at, "
            "description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ticket_rows,
        )
        db.conn.executemany(
            "INSERT INTO ticket_notes (ticket_number, operator_id, body, created_at) "
            "VALUES (?, ?, ?, ?)",
            note_rows,
        )
    db.execute("ANALYZE")
    db.conn.commit()
    db.close()
    return samples


class TestClientSession:
    """Requests through Flask's test client."""

    def __init__(self, app):
        self.client = app.test_client()

    def get(self, path: str) -> tuple[int, str]:
        response = self.client.get(path)
        return response.status_code, response.get_data(as_text=True)

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        response = self.client.post(path, data=data)
        return response.status_code, response.get_data(as_text=True)


class HttpSession:
    """Requests over real HTTP (loopback) with a cookie jar."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def _open(self, request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base_url + path))  # noqa: S310

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(self.base_url + path, data=body))  # noqa: S310


def sign_in(session) -> None:
    status, page = session.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    status, page = session.post(
        "/console/login", {"login": "ivanova", "password": PASSWORD, "csrf_token": token}
    )
    status, page = session.get("/console/calls")
    if status != 200 or "call-log" not in page:
        raise SystemExit(f"could not sign in (status {status})")


def measure(session, paths: list[str], check: str | None = None) -> list[float]:
    """Milliseconds per GET; each page must answer 200 (and contain `check`)."""
    timings = []
    for path in paths:
        started = time.perf_counter()
        status, page = session.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        if status != 200 or (check and check not in page):
            raise SystemExit(f"{path} answered {status} without {check!r}")
    return timings


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--http", action="store_true", help="Real HTTP to waitress on loopback.")
    parser.add_argument("--json", action="store_true", help="Print a JSON report.")
    args = parser.parse_args(argv)
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as folder:
        db_path = str(Path(folder) / "ivr.sqlite3")
        started = time.perf_counter()
        samples = seed(db_path, args.calls, rng)
        seeded = time.perf_counter() - started
        print(f"seeded {args.calls} calls (+ timelines, tickets, notes) in {seeded:.1f} s")
        server = None
        if args.http:
            from ivr.devserver import LocalServer

            server = LocalServer(db_path=db_path, demo_roster=False, threads=4)
            session = HttpSession(server.base_url)
        else:
            session = TestClientSession(create_app({"db_path": db_path, "auth_token": "bench"}))
        try:
            sign_in(session)
            n = args.requests
            pages = {
                "call log, first page": (["/console/calls"] * n, "call-log"),
                "search by order number": (
                    [f"/console/calls?q={order}" for order in rng.sample(samples["orders"], n)],
                    "call-log",
                ),
                "search by ticket number": (
                    [f"/console/calls?q={ticket}" for ticket in rng.sample(samples["tickets"], n)],
                    "call-log",
                ),
                "search by caller's last 4 digits": (
                    [f"/console/calls?q={digits}" for digits in rng.sample(samples["callers"], n)],
                    "call-log",
                ),
                "call log, one line + outcome": (
                    ["/console/calls?line=international&outcome=connected"] * n,
                    "call-log",
                ),
                "call log, page 100": (["/console/calls?page=100"] * n, "call-log"),
                "tickets, first page": (["/console/tickets"] * n, "ticket-list"),
                "dashboard": (["/console/"] * n, "tile-calls"),
                "live calls (JSON)": (["/console/live.json"] * n, None),
            }
            report = {}
            for name, (paths, check) in pages.items():
                measure(session, paths[:3], check)  # warm up caches
                timings = measure(session, paths, check)
                report[name] = {
                    "p50_ms": round(statistics.median(timings), 1),
                    "p95_ms": round(percentile(timings, 0.95), 1),
                    "max_ms": round(max(timings), 1),
                }
        finally:
            if server is not None:
                server.close()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(f"{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, row in report.items():
            print(f"{name:<36} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8}")
    targets = ("call log, first page", "search by order number")
    missed = [name for name in targets if report[name]["p95_ms"] > TARGET_MS]
    print(
        f"target p95 <= {TARGET_MS:.0f} ms for {' and '.join(targets)}: "
        + ("met" if not missed else f"MISSED by {', '.join(missed)}")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
