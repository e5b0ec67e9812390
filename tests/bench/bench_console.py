"""Benchmark the operator console on a year of a busy line: 2 000 000 calls by default.

Run: python tests/bench/bench_console.py [--calls 2000000] [--requests 40] [--http]
     [--db PATH (seed once, reuse on the next run)] [--only REGEX]

Seeds a database the way a year of a busy line fills it (about 5 000 calls a day over 400
days, more on weekdays and in office hours, two lines, repeat callers, outcomes, operators,
order numbers, tickets with transcripts and notes, recognitions, an audit trail), in one
transaction with executemany, in start order as the webhooks would. Then signs in and times
every console page and filter: the call log with each filter and their combinations, number
and text searches, deep pages, the ticket list, the dashboard, live calls, the audit trail
and the CSV export's first bytes. Prints p50/p95/max per page; the target is p95 <= 200 ms
for every page. Requests go through Flask's test client, or over real HTTP with --http.

Figures on the reference machine (2 cores, Python 3.11, SQLite 3.40; 2 000 000 calls,
8 000 000 timeline rows, 1 254 455 tickets; test client; ms). Before: schema v3 with the
code before migration v4 (20 requests a page); after: v4 (40 requests a page). Seeding
takes about 3 minutes, migrating the seeded v3 database to v4 about 13 seconds.

    page                               before p50     p95  after p50    p95
    call log, first page                     65.7    82.2        8.5   13.7
    call log, page 2                         64.9    74.7        8.3    9.1
    call log, page 20                        83.3   101.6       10.3   13.2
    call log, page 200                       66.2    87.4       14.9   25.0
    line                                    243.7   348.9       10.3   14.6
    outcome (common)                         95.2   196.4        5.0    8.0
    outcome (rare)                           55.3    69.3        3.7    4.9
    operator                                 59.2    77.5        4.9    7.5
    mine                                     64.7    97.3        4.4    4.8
    category                                366.2   567.6        9.9   12.2
    one day                                  54.4   115.8        5.0   11.2
    a month                                  58.0    62.3        9.4   15.0
    line + outcome                          288.3   325.3        8.5    9.3
    line + outcome (rare)                    68.0    84.5        4.6    5.7
    line + outcome + category               295.1   388.3       42.5   56.8
    operator + outcome                       52.7    66.0        4.6    5.3
    operator + category + line              157.4   167.7       10.8   11.6
    category + line, page 5                 252.6   299.7       30.1   35.8
    one day + line + outcome                 54.9    70.4        5.0    6.8
    outcome, page 150                        87.0    91.4       13.6   18.8
    search: order number                     52.1    66.3        2.6    3.5
    search: order number prefix              66.3    95.6        5.2    7.6
    search: ticket number                    55.2    75.6        2.7    3.0
    search: caller's last 4                  57.3    94.0        7.3    8.3
    search: caller's whole number            52.8    75.3        3.0    3.8
    search: common word                     926.8   988.2       67.7  100.5
    search: rare word                       810.7  1622.5       28.8   35.9
    search: word + line                     857.6  1025.2       76.5   80.4
    tickets, first page                      57.6    74.1        6.5    7.9
    tickets, page 100                        57.7    59.7        9.9   11.3
    tickets, open                            53.9    60.1       33.3   52.6
    tickets, callbacks                       58.2    60.1       58.8   77.1
    tickets, operator + status              265.2   318.3       36.4   50.3
    tickets, category + status               68.0    91.0       56.8   87.3
    tickets, order number                    54.2    58.8        2.3    2.6
    tickets, caller's last 4                 57.6    59.8        6.0    6.8
    tickets, word                           352.9   470.7       59.0   68.1
    dashboard                                98.7   132.2       13.2   17.9
    live calls (JSON)                         4.9     5.6        5.1    8.5
    audit trail                               4.9     5.1        5.1    7.2
    audit trail, page 100                     5.3     5.6        6.3    8.4
    CSV export, first bytes                   5.9     6.2       15.1   22.1
    CSV, line + outcome, first bytes          9.2    12.6        8.2   11.5
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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ivr import db as database  # noqa: E402
from ivr.accounts import hash_password  # noqa: E402
from ivr.db import operators as roster_store  # noqa: E402
from ivr.hours import MOSCOW  # noqa: E402
from ivr.tickets import new_ticket_number  # noqa: E402
from ivr.web.app import create_app  # noqa: E402

TARGET_MS = 200.0
DAYS = 400
PASSWORD = "bench-password-1"  # noqa: S105 - throwaway accounts in a benchmark database
OPERATORS = [
    ("Иванова Мария Сергеевна", "ivanova", "admin"),
    ("Петров Алексей Николаевич", "petrov", "operator"),
    ("Смирнова Ольга Викторовна", "smirnova", "operator"),
    ("Кузнецов Дмитрий Игоревич", "kuznetsov", "operator"),
    ("Попова Анна Павловна", "popova", "operator"),
    ("Васильев Сергей Андреевич", "vasiliev", "operator"),
    ("Соколова Елена Юрьевна", "sokolova", "operator"),
    ("Михайлов Игорь Олегович", "mikhailov", "operator"),
    ("Новикова Татьяна Ильинична", "novikova", "operator"),
    ("Фёдоров Артём Романович", "fedorov", "admin"),
    ("Морозова Ксения Денисовна", "morozova", "operator"),
    ("Волков Никита Евгеньевич", "volkov", "operator"),
]
# (outcome, weight in office hours, weight after hours, makes a ticket, reaches an operator)
OUTCOMES = [
    ("connected", 46, 0, True, True),
    ("queued", 5, 0, True, True),
    ("hung_up_in_queue", 5, 0, True, True),
    ("callback_after_queue", 2, 0, True, False),
    ("hung_up_before_answer", 3, 0, True, True),
    ("connecting", 0.2, 0, True, True),
    ("after_hours_callback", 0, 45, True, False),
    ("closed_no_request", 0, 15, False, False),
    ("status_told", 10, 10, False, False),
    ("hung_up_in_menu", 17, 25, False, False),
    ("hung_up", 4, 3, False, False),
    ("busy", 0.5, 0.5, False, False),
    ("failed", 0.3, 0.3, False, False),
    ("no-answer", 0.5, 0.5, False, False),
    ("canceled", 0.1, 0.1, False, False),
]
CATEGORIES = [("delivery", 40), ("returns", 20), ("payment", 15), ("quality", 15), ("other", 10)]
# Moscow hour -> share of a day's calls (office hours 8-20 carry most).
HOUR_WEIGHTS = [
    1,
    0.5,
    0.3,
    0.3,
    0.3,
    0.5,
    1,
    3,
    6,
    9,
    10,
    10,
    9,
    9,
    10,
    10,
    9,
    8,
    7,
    5,
    3,
    2,
    2,
    1,
]
TRANSCRIPT_WORDS = {
    "delivery": "курьер не привёз заказ доставка опаздывает третий день адрес пункт выдачи",
    "returns": "хочу вернуть товар не подошёл размер возврат денег чек упаковка",
    "payment": "деньги списали дважды оплата картой не прошла возврат средств банк",
    "quality": "товар пришёл сломанный брак царапина не включается гарантия",
    "other": "подскажите пожалуйста как изменить номер телефона в личном кабинете",
}
RARE_WORDS = ["холодильник", "самокат", "пылесос", "кофеварка", "велосипед", "палатка"]


def weighted(rng: random.Random, table: list[tuple], weight_at: int = 1):
    """A picker for `table` rows by the weight in column `weight_at` (cumulative, bisect)."""
    import bisect
    import itertools

    totals = list(itertools.accumulate(row[weight_at] for row in table))

    def pick():
        return table[bisect.bisect(totals, rng.random() * totals[-1])]

    return pick


def call_starts(rng: random.Random, calls: int, now: datetime) -> Iterator[datetime]:
    """`calls` start instants over the last DAYS days, in order: weekdays busier, office hours."""
    first_day = (now.astimezone(MOSCOW) - timedelta(days=DAYS - 1)).date()
    day_weights = [0.65 if (first_day + timedelta(d)).weekday() >= 5 else 1.0 for d in range(DAYS)]
    scale = calls / sum(day_weights)
    hour_pick = weighted(rng, list(enumerate(HOUR_WEIGHTS)))
    emitted = 0
    for index, weight in enumerate(day_weights):
        day = first_day + timedelta(days=index)
        midnight = datetime(day.year, day.month, day.day, tzinfo=MOSCOW)
        count = calls - emitted if index == DAYS - 1 else round(weight * scale)
        count = max(0, min(count, calls - emitted))
        offsets = sorted(hour_pick()[0] * 3600 + rng.randrange(3600) for _ in range(count))
        for offset in offsets:
            yield min(midnight + timedelta(seconds=offset), now - timedelta(seconds=5))
        emitted += count


def seed(db_path: str, calls: int, rng: random.Random, events_per_call: int = 4) -> dict:
    """Fill a fresh database; returns samples (order and ticket numbers, callers, days)."""
    db = database.connect(db_path)
    database.migrate(db)
    db.execute("PRAGMA cache_size = -1000000")  # 1 GB: the seed's index pages stay in memory
    now = datetime.now(UTC)
    password_hash = hash_password(PASSWORD)
    for index, (name, login, role) in enumerate(OPERATORS, start=1):
        roster_store.insert_operator(
            db,
            {
                "full_name": name,
                "login": login,
                "role": role,
                "password_hash": password_hash,
                "languages": "ru,en" if index % 3 else "ru",
                "endpoint": f"+7999000{index:04d}",
                "created_at": database.timestamp(now - timedelta(days=DAYS)),
            },
        )
    db.conn.commit()
    outcome_office = weighted(rng, OUTCOMES, 1)
    outcome_night = weighted(rng, OUTCOMES, 2)
    category_pick = weighted(rng, CATEGORIES)
    callers = [f"+79{rng.randrange(10**9):09d}" for _ in range(600_000)]
    samples: dict[str, list[str]] = {"orders": [], "tickets": [], "callers": [], "days": []}
    tickets_seen: set[str] = set()
    counts = {"calls": 0, "events": 0, "tickets": 0, "notes": 0, "recognitions": 0}

    def rows() -> Iterator[tuple[str, tuple]]:
        for index, started in enumerate(call_starts(rng, calls, now)):
            moscow = started.astimezone(MOSCOW)
            after_hours = not 8 <= moscow.hour < 20
            call_sid = f"CA{index:032x}"
            caller = callers[int(len(callers) * rng.random() ** 1.6)]  # repeat callers
            line = "domestic" if rng.random() < 0.8 else "international"
            language = "en" if line == "international" and rng.random() < 0.6 else "ru"
            outcome, *_, makes_ticket, reaches = (
                outcome_night if after_hours else outcome_office
            )()
            live = (now - started).total_seconds() < 600 and rng.random() < 0.5
            order = (
                f"{rng.randrange(10**9, 10**10)}" if makes_ticket and rng.random() < 0.75 else None
            )
            category = category_pick()[0] if makes_ticket else None
            operator_id = rng.randrange(1, len(OPERATORS) + 1) if reaches else None
            ticket = None
            if makes_ticket:
                ticket = new_ticket_number(rng.randrange)
                while ticket in tickets_seen:
                    ticket = new_ticket_number(rng.randrange)
                tickets_seen.add(ticket)
            stamp = database.timestamp(started)
            duration = rng.randrange(20, 600)
            ended = None if live else database.timestamp(started + timedelta(seconds=duration))
            yield (
                "calls",
                (
                    call_sid,
                    line,
                    "+78002345555" if line == "domestic" else "+74952321000",
                    caller,
                    language,
                    stamp,
                    ended or stamp,
                    ended,
                    None if live else "completed",
                    None if live else duration,
                    "main_menu" if live else "ended",
                    None if live else outcome,
                    order,
                    category,
                    ticket,
                    operator_id,
                    OPERATORS[operator_id - 1][0] if operator_id else None,
                    int(after_hours),
                ),
            )
            for seq in range(events_per_call):
                kind = ("call_started", "step", "prompt", "input")[min(seq, 3)]
                detail = '{"texts": ["Здравствуйте! Вы позвонили в службу поддержки."]}'
                yield ("events", (call_sid, seq, stamp, kind, "main_menu", detail))
            if ticket:
                description = None
                if rng.random() < 0.35:
                    words = TRANSCRIPT_WORDS[category].split()
                    picked = rng.sample(words, rng.randrange(4, min(9, len(words))))
                    if rng.random() < 0.02:
                        picked.append(rng.choice(RARE_WORDS))
                    description = " ".join(picked)
                    yield (
                        "recognitions",
                        (call_sid, "description", language, "done", 1, description, stamp),
                    )
                if order and rng.random() < 0.3:
                    yield (
                        "recognitions",
                        (call_sid, "order_number", language, "done", 1, None, stamp),
                    )
                age_days = (now - started).days
                status = "resolved" if age_days > 14 or rng.random() < 0.5 else "open"
                if status == "open" and rng.random() < 0.4:
                    status = "in_progress"
                callback_at = (
                    database.timestamp(started + timedelta(hours=12)) if after_hours else None
                )
                yield (
                    "tickets",
                    (
                        ticket,
                        call_sid,
                        caller,
                        order,
                        category,
                        status,
                        operator_id,
                        OPERATORS[operator_id - 1][0] if operator_id else None,
                        int(after_hours),
                        callback_at,
                        stamp,
                        database.timestamp(started + timedelta(days=2)),
                        ended or stamp,
                        description,
                    ),
                )
                if rng.random() < 0.08:
                    note = (
                        "Позвонил клиенту, ждём курьера."
                        if rng.random() < 0.5
                        else "Вернули деньги."
                    )
                    yield ("ticket_notes", (ticket, operator_id, note, ended or stamp))
                if order and len(samples["orders"]) < 2000 and rng.random() < 0.01:
                    samples["orders"].append(order)
                if len(samples["tickets"]) < 2000 and rng.random() < 0.01:
                    samples["tickets"].append(ticket)
            if len(samples["callers"]) < 2000 and rng.random() < 0.01:
                samples["callers"].append(caller)
            if moscow.date().isoformat() not in samples["days"][-1:]:
                samples["days"].append(moscow.date().isoformat())

    statements = {
        "calls": "INSERT INTO calls (call_sid, line, to_number, from_number, language, "
        "started_at, updated_at, ended_at, status, duration, step, outcome, order_number, "
        "category, ticket_number, operator_id, operator_name, after_hours) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "events": "INSERT INTO events (call_sid, seq, at, kind, step, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        "tickets": "INSERT INTO tickets (number, call_sid, caller_number, order_number, "
        "category, status, operator_id, operator_name, after_hours, callback_at, created_at, "
        "due_at, updated_at, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "ticket_notes": "INSERT INTO ticket_notes (ticket_number, operator_id, body, "
        "created_at) VALUES (?, ?, ?, ?)",
        "recognitions": "INSERT INTO recognitions (call_sid, purpose, language, status, ok, "
        "text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    }
    batches: dict[str, list[tuple]] = {table: [] for table in statements}
    with database.write_transaction(db):
        # Parents before children in each flush (foreign keys are on).
        def flush() -> None:
            for table, statement in statements.items():
                if batches[table]:
                    db.conn.executemany(statement, batches[table])
                    counts[table.replace("ticket_notes", "notes")] += len(batches[table])
                    batches[table].clear()

        for table, values in rows():
            batches[table].append(values)
            if len(batches["calls"]) >= 20_000 and table == "calls":
                flush()
        flush()
        audit = [
            (
                database.timestamp(now - timedelta(seconds=rng.randrange(DAYS * 86400))),
                rng.randrange(1, len(OPERATORS) + 1),
                "view_call",
                f"CA{rng.randrange(calls):032x}",
                "{}",
            )
            for _ in range(min(300_000, calls // 5))
        ]
        audit.sort()
        db.conn.executemany(
            "INSERT INTO audit_log (at, operator_id, action, target, detail) "
            "VALUES (?, ?, ?, ?, ?)",
            audit,
        )
    db.execute("ANALYZE")
    db.conn.commit()
    db.close()
    samples["counts"] = counts
    return samples


class TestClientSession:
    """Requests through Flask's test client."""

    def __init__(self, app):
        self.client = app.test_client()

    def get(self, path: str, first_bytes: bool = False) -> tuple[int, str]:
        if first_bytes:  # a streamed response: time to its first chunk
            response = self.client.get(path, buffered=False)
            chunk = next(iter(response.response), b"")
            response.close()
            return response.status_code, chunk.decode() if isinstance(chunk, bytes) else chunk
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

    def _open(self, request, first_bytes: bool = False) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=60) as response:
                body = response.read(4096) if first_bytes else response.read()
                return response.status, body.decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def get(self, path: str, first_bytes: bool = False) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base_url + path), first_bytes)  # noqa: S310

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(self.base_url + path, data=body))  # noqa: S310


def sign_in(session, login: str = "ivanova") -> None:
    status, page = session.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    session.post("/console/login", {"login": login, "password": PASSWORD, "csrf_token": token})
    status, page = session.get("/console/calls")
    if status != 200 or "call-log" not in page:
        raise SystemExit(f"could not sign in as {login} (status {status})")


def measure(session, paths: list[str], check: str | None, first_bytes: bool) -> list[float]:
    """Milliseconds per GET; each page must answer 200 (and contain `check`)."""
    timings = []
    for path in paths:
        started = time.perf_counter()
        status, page = session.get(path, first_bytes=first_bytes)
        timings.append((time.perf_counter() - started) * 1000)
        if status != 200 or (check and check not in page):
            raise SystemExit(f"{path} answered {status} without {check!r}")
    return timings


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def pages(samples: dict, rng: random.Random, n: int) -> dict[str, tuple[list[str], str | None]]:
    """Every console page and filter to time: name -> (paths, text each answer must hold)."""

    def sample(name: str) -> list[str]:
        return [rng.choice(samples[name]) for _ in range(n)]

    days = samples["days"]
    recent_days = days[-30:]
    log, tickets = "call-log", "ticket-list"
    calls = "/console/calls?"
    return {
        "call log, first page": ([calls] * n, log),
        "call log, page 2": ([calls + "page=2"] * n, log),
        "call log, page 20": ([calls + "page=20"] * n, log),
        "call log, page 200": ([calls + "page=200"] * n, log),
        "line": ([calls + "line=international"] * n, log),
        "outcome (common)": ([calls + "outcome=connected"] * n, log),
        "outcome (rare)": ([calls + "outcome=canceled"] * n, log),
        "operator": ([calls + f"operator={rng.randrange(1, 13)}" for _ in range(n)], log),
        "mine": ([calls + "mine=1"] * n, log),
        "category": ([calls + "category=quality"] * n, log),
        "one day": ([calls + f"from={d}&to={d}" for d in rng.choices(recent_days, k=n)], log),
        "a month": ([calls + f"from={days[-30]}&to={days[-1]}"] * n, None),
        "line + outcome": ([calls + "line=international&outcome=connected"] * n, log),
        "line + outcome (rare)": ([calls + "line=international&outcome=busy"] * n, log),
        "line + outcome + category": (
            [calls + "line=international&outcome=connected&category=other"] * n,
            log,
        ),
        "operator + outcome": (
            [calls + f"operator={rng.randrange(1, 13)}&outcome=hung_up_in_queue" for _ in range(n)],
            log,
        ),
        "operator + category + line": (
            [
                calls + f"operator={rng.randrange(1, 13)}&category=other&line=international"
                for _ in range(n)
            ],
            log,
        ),
        "category + line, page 5": (
            [calls + "category=payment&line=international&page=5"] * n,
            log,
        ),
        "one day + line + outcome": (
            [
                calls + f"from={d}&to={d}&line=domestic&outcome=hung_up_in_menu"
                for d in rng.choices(recent_days, k=n)
            ],
            log,
        ),
        "outcome, page 150": ([calls + "outcome=connected&page=150"] * n, log),
        "search: order number": ([calls + f"q={o}" for o in sample("orders")], log),
        "search: order number prefix": ([calls + f"q={o[:5]}" for o in sample("orders")], log),
        "search: ticket number": ([calls + f"q={t}" for t in sample("tickets")], log),
        "search: caller's last 4": ([calls + f"q={c[-4:]}" for c in sample("callers")], log),
        "search: caller's whole number": (
            [calls + "q=" + urllib.parse.quote(c) for c in sample("callers")],
            log,
        ),
        "search: common word": ([calls + "q=курьер"] * n, log),
        "search: rare word": ([calls + f"q={w}" for w in rng.choices(RARE_WORDS, k=n)], log),
        "search: word + line": ([calls + "q=брак&line=international"] * n, log),
        "tickets, first page": (["/console/tickets"] * n, tickets),
        "tickets, page 100": (["/console/tickets?page=100"] * n, tickets),
        "tickets, open": (["/console/tickets?status=open"] * n, tickets),
        "tickets, callbacks": (["/console/tickets?callbacks=1&status=open"] * n, tickets),
        "tickets, operator + status": (
            [f"/console/tickets?operator={rng.randrange(1, 13)}&status=resolved" for _ in range(n)],
            tickets,
        ),
        "tickets, category + status": (
            ["/console/tickets?category=other&status=open"] * n,
            tickets,
        ),
        "tickets, order number": ([f"/console/tickets?q={o}" for o in sample("orders")], tickets),
        "tickets, caller's last 4": (
            [f"/console/tickets?q={c[-4:]}" for c in sample("callers")],
            None,
        ),
        "tickets, word": (["/console/tickets?q=гарантия"] * n, tickets),
        "dashboard": (["/console/"] * n, "tile-calls"),
        "live calls (JSON)": (["/console/live.json"] * n, None),
        "audit trail": (["/console/audit"] * n, None),
        "audit trail, page 100": (["/console/audit?page=100"] * n, None),
        "CSV export, first bytes": (["/console/calls.csv"] * n, "call_sid"),
        "CSV, line + outcome, first bytes": (
            ["/console/calls.csv?line=international&outcome=busy"] * n,
            "call_sid",
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--events", type=int, default=4, help="Timeline rows per call.")
    parser.add_argument("--db", help="Seed into this file once and reuse it on later runs.")
    parser.add_argument("--only", help="Time only the pages whose name matches this regex.")
    parser.add_argument("--http", action="store_true", help="Real HTTP to waitress on loopback.")
    parser.add_argument("--json", action="store_true", help="Print a JSON report.")
    args = parser.parse_args(argv)
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as folder:
        db_path = args.db or str(Path(folder) / "ivr.sqlite3")
        samples_path = Path(db_path + ".samples.json")
        if args.db and samples_path.exists():
            samples = json.loads(samples_path.read_text())
            print(f"reusing {db_path}: {samples['counts']}")
        else:
            started = time.perf_counter()
            samples = seed(db_path, args.calls, rng, args.events)
            print(f"seeded {samples['counts']} in {time.perf_counter() - started:.1f} s")
            if args.db:
                samples_path.write_text(json.dumps(samples))
        started = time.perf_counter()
        app = create_app({"db_path": db_path, "auth_token": "bench"})  # migrates
        print(f"opened (and migrated) in {time.perf_counter() - started:.1f} s")
        server = None
        if args.http:
            from ivr.devserver import LocalServer

            server = LocalServer(db_path=db_path, demo_roster=False, threads=4)
            session = HttpSession(server.base_url)
        else:
            session = TestClientSession(app)
        report = {}
        try:
            sign_in(session)
            for name, (paths, check) in pages(samples, rng, args.requests).items():
                if args.only and not re.search(args.only, name):
                    continue
                first_bytes = "first bytes" in name
                measure(session, paths[:2], check, first_bytes)  # warm up caches
                timings = measure(session, paths, check, first_bytes)
                report[name] = {
                    "p50_ms": round(statistics.median(timings), 1),
                    "p95_ms": round(percentile(timings, 0.95), 1),
                    "max_ms": round(max(timings), 1),
                }
                row = report[name]
                print(
                    f"{name:<36} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8}",
                    flush=True,
                )
        finally:
            if server is not None:
                server.close()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    missed = [name for name, row in report.items() if row["p95_ms"] > TARGET_MS]
    print(
        f"target p95 <= {TARGET_MS:.0f} ms on every page: "
        + ("met" if not missed else f"MISSED by {', '.join(missed)}")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
