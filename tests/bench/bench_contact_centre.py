"""The contact centre under load: 20 operators, 100 callers arriving at random (Poisson)
over about 3 minutes of simulated time, through the real service (LocalServer: the app
on waitress), the real REST adapter (ivr.twilio_api over HTTP) and the Twilio REST
stand-in (operators' phones), with Erlang C (M/M/c) beside the measured figures.

Run: .venv/bin/python tests/bench/bench_contact_centre.py [--scale 0.2] [--seed 11]

Time: every caller- and phone-side duration (arrivals, patience, ringing, talk, hold
music) runs at `--scale` real seconds per simulated second (0.2: ~3 min simulated in about
a minute of wall time). The service is not scaled: its dispatch work, webhooks and timers
run in real time, so any real-time delay of the service counts 1/scale times in the
simulated waits (pessimistic for the service). The dispatch delay is given in real ms.

The model: arrivals Poisson at λ = 0.85·c/E[talk] (offered load 85 %), talk uniform
20–40 s, 10 % of operators' rings not answered (the phone rings out after the service's
25 s Timeout, then the next operator), callers' patience exponential with mean 180 s
(they hang up; Erlang C has no abandonment, so it is the no-abandonment bound). Every
caller goes through the queue (the IVR's own direct <Dial> is answered no-answer).

Measured once (2 cores x86_64, Python 3.11, --scale 0.2 --seed 11):

    100 callers over 179 s simulated (36 s real, scale 0.2); 20 operators; λ = 0.558/s
    offered load 84% (talk 30 s), 81% (measured handling 28.9 s)
    queued 100; bridged 98; abandoned 2 (2.0%); operators' rings 108, not answered 10
    service level (answered ≤ 20 s, of all queued): 91.0%
        Erlang C: 96.1% (talk 30 s) / 98.1% (handling); gap -5.1 / -7.1 pts
    ASA: 7.0 s; Erlang C: 3.2 s / 2.0 s; gap +3.8 / +5.0 s
    longest wait: 50.0 s; occupancy 59.2% (talking, over the whole run with its drain)
    dispatch delay (operator free -> phone rung, real ms): p50 6, p95 12 (n=108)
    webhooks (callers'): p50 4.2 ms, p99 16.4 ms (n=622)
    invariants: operator rung for two callers at once: 0 (stand-in), 0 (legs on record);
        stranded callers: 0; callers not ending bridged/abandoned: 0; caller errors: 0

    The gap to Erlang C is mostly what M/M/c leaves out: the wait here runs until the
    operator picks up, so it includes their phone ringing (1–4 s) and the 10 % of rings
    nobody answers (25 s each before the next operator); the service's own dispatch adds
    milliseconds (the delay above). Wall time of the run: about a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sqlite3
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ivr import db as database  # noqa: E402
from ivr.db import operators as roster_store  # noqa: E402
from ivr.devserver import LocalServer  # noqa: E402
from ivr.emulator import EmulatedCall, HttpTransport, TwilioStandIn  # noqa: E402
from ivr.emulator.rest import Phone  # noqa: E402
from ivr.hours import parse_instant  # noqa: E402

OPERATORS = 20
CALLERS = 100
TALK = (20.0, 40.0)
LOAD = 0.85
NO_ANSWER_SHARE = 0.10
PATIENCE_MEAN = 180.0
SERVICE_LEVEL_T = 20.0
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
# Leg timestamps are taken just before their transaction commits: two legs of one
# operator closer than this are one ending and the next starting (the database's unique
# index on live legs refuses real overlaps).
TOLERANCE = 0.05
NOW = "2026-11-26T12:00:00+03:00"


def erlang_c(c: int, a: float) -> float:
    """P(wait) for M/M/c with offered load a Erlangs."""
    term, total = 1.0, 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c * c / (c - a)
    return last / (total + last)


def erlang_figures(c: int, rate: float, service: float, t: float) -> tuple[float, float]:
    """(service level within t, ASA) predicted by Erlang C."""
    a = rate * service
    p_wait = erlang_c(c, a)
    return 1 - p_wait * math.exp(-(c - a) * t / service), p_wait * service / (c - a)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    scale, rng = args.scale, random.Random(args.seed + 1)  # the phones (threads)
    arrivals = random.Random(args.seed)  # arrivals and patience: the same for every run
    mean_talk = sum(TALK) / 2
    rate = LOAD * OPERATORS / mean_talk  # callers per simulated second

    twilio = TwilioStandIn(time_scale=scale)
    rung: list[tuple[str, float]] = []  # (operator's number, wall time the phone rang)
    overlaps: list[str] = []
    legs_lock = threading.Lock()
    original_register, original_phone_for = twilio.register, twilio.phone_for

    def phone_for(number: str) -> Phone:
        base = original_phone_for(number)
        if not number.startswith("+7999"):
            return base
        # Each ring: 20-40 s of talk, and now and then nobody picks up.
        return dataclasses.replace(
            base,
            talk_seconds=rng.uniform(*TALK),
            no_answer=rng.random() < NO_ANSWER_SHARE,
            answer_after=rng.uniform(1, 4),
        )

    def register(leg) -> None:
        with legs_lock:
            live = [
                other
                for other in twilio.legs_to(leg.to)
                if other.status not in FINAL and other.direction == "outbound-api"
            ]
            if live and leg.direction == "outbound-api":
                overlaps.append(leg.to)

            rung.append((leg.to, time.time()))
        original_register(leg)

    twilio.phone_for, twilio.register = phone_for, register
    server = LocalServer(
        threads=32,
        demo_roster=False,
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        twilio_api_url=twilio.base_url,
        now=parse_instant(NOW),
    )
    with database.connect(server.db_path) as db:
        for index in range(OPERATORS):
            roster_store.insert_operator(
                db,
                {
                    "full_name": f"Оператор Номер {index + 1}",
                    "name_en": f"Operator {index + 1}",
                    "languages": "ru",
                    "endpoint": f"+7999{index:07d}",
                    "shift_start": "00:00",
                    "shift_end": "23:59",
                    "created_at": "2026-01-01T00:00:00.000+00:00",
                },
            )
        db.conn.commit()

    outcomes: dict[str, str] = {}
    calls: list[EmulatedCall] = []
    errors: list[str] = []

    def caller(index: int, patience: float) -> None:
        call = EmulatedCall(
            HttpTransport(),
            server.base_url,
            server.auth_token,
            account_sid=twilio.account_sid,
            from_=f"+7916{index:07d}",
            at=NOW,
            dial_status="no-answer",
            twilio=twilio,
            time_scale=scale,
        )
        calls.append(call)
        try:
            call.start().press("0").silence()
            if not call.in_queue:
                outcomes[call.result.call_sid] = "not queued"
                return
            call.wait_for_operator(patience * scale)
            if not call.result.bridged:
                call.hang_up()  # out of patience: abandons
                outcomes[call.result.call_sid] = "abandoned"
                return
            call.wait_for_operator(3600)
            outcomes[call.result.call_sid] = "bridged"
        except Exception as error:  # noqa: BLE001 - counted and printed
            errors.append(f"caller {index}: {error!r}")

    started = time.time()
    threads = []
    arrival = 0.0
    for index in range(CALLERS):
        arrival += arrivals.expovariate(rate)
        delay = started + arrival * scale - time.time()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(
            target=caller, args=(index, arrivals.expovariate(1 / PATIENCE_MEAN)), daemon=True
        )
        thread.start()
        threads.append(thread)
    last_arrival = arrival
    for thread in threads:
        thread.join(600)
    time.sleep(2 * scale + 1)  # the last status callbacks
    ended = time.time()

    con = sqlite3.connect(server.db_path)
    con.row_factory = sqlite3.Row
    entries = [dict(row) for row in con.execute("SELECT * FROM queue_entries")]
    legs = [
        dict(row)
        for row in con.execute(
            "SELECT l.*, o.endpoint FROM operator_legs l JOIN operators o ON o.id = l.operator_id"
        )
    ]
    sim = 1 / scale
    waits_answered = [
        (ts(e["answered_at"]) - ts(e["entered_at"])) * sim for e in entries if e["answered_at"]
    ]
    abandoned = [e for e in entries if e["state"] == "hung_up" and not e["answered_at"]]
    all_waits = waits_answered + [
        (ts(e["left_at"]) - ts(e["entered_at"])) * sim for e in abandoned if e["left_at"]
    ]
    stranded = [e for e in entries if e["state"] == "waiting"]
    service_level = sum(w <= SERVICE_LEVEL_T for w in waits_answered) / max(1, len(entries))
    asa = statistics.mean(waits_answered) if waits_answered else float("nan")
    busy = sum(
        (ts(leg["ended_at"]) or ended) - ts(leg["answered_at"])
        for leg in legs
        if leg["answered_at"]
    )
    span = last_arrival * scale
    occupancy = busy / (OPERATORS * (ended - started))
    # The dispatch delay: the operator free (their last leg over) and the caller waiting
    # with nobody rung for them (queued, or their last ring ended) -> the operator's phone
    # rings (the stand-in's clock).
    delays = []
    rings: dict[str, list[float]] = {}
    for number, when in rung:
        rings.setdefault(number, []).append(when)
    overlap_db = 0
    previous_end: dict[str, float] = {}  # operator -> end of their last leg
    caller_ready = {e["call_sid"]: ts(e["entered_at"]) for e in entries}
    for leg in sorted(legs, key=lambda leg: leg["created_at"]):
        created = ts(leg["created_at"])
        free_at = previous_end.get(leg["endpoint"], started)
        if free_at - created > TOLERANCE:
            overlap_db += 1
        ready = caller_ready.get(leg["caller_call_sid"], created)
        ring = [t for t in rings.get(leg["endpoint"], []) if t >= created - TOLERANCE]
        if ring:
            delays.append(max(0.0, min(ring) - max(free_at, ready)) * 1000)
        end = ts(leg["ended_at"]) or ended
        previous_end[leg["endpoint"]] = end
        caller_ready[leg["caller_call_sid"]] = end
    latencies = [
        seconds * 1000
        for call in calls
        for path, seconds in call.result.latencies
        if "/twilio/" in path or path.startswith("/")
    ]
    handle = [
        (ts(leg["ended_at"]) - ts(leg["answered_at"])) * sim
        for leg in legs
        if leg["answered_at"] and leg["ended_at"]
    ]
    mean_handle = statistics.mean(handle) if handle else mean_talk
    measured_rate = len(entries) / (last_arrival or 1)
    sl_c, asa_c = erlang_figures(OPERATORS, measured_rate, mean_talk, SERVICE_LEVEL_T)
    sl_h, asa_h = erlang_figures(OPERATORS, measured_rate, mean_handle, SERVICE_LEVEL_T)
    no_answers = sum(1 for leg in legs if leg["result"] == "no-answer")

    lines = [
        f"{CALLERS} callers over {last_arrival:.0f} s simulated ({span:.0f} s real, scale "
        f"{scale}); {OPERATORS} operators; λ = {measured_rate:.3f}/s; offered load "
        f"{measured_rate * mean_talk / OPERATORS:.0%} (talk), "
        f"{measured_rate * mean_handle / OPERATORS:.0%} (measured handling {mean_handle:.1f} s)",
        f"queued {len(entries)}; bridged {len(waits_answered)}; abandoned {len(abandoned)} "
        f"({len(abandoned) / max(1, len(entries)):.1%}); operators' rings {len(legs)}, "
        f"not answered {no_answers}",
        f"service level (answered ≤ {SERVICE_LEVEL_T:.0f} s, of all queued): {service_level:.1%}"
        f"   Erlang C: {sl_c:.1%} (talk {mean_talk:.0f} s) / {sl_h:.1%} (handling)"
        f"   gap {100 * (service_level - sl_c):+.1f} / {100 * (service_level - sl_h):+.1f} pts",
        f"ASA: {asa:.1f} s   Erlang C: {asa_c:.1f} s / {asa_h:.1f} s"
        f"   gap {asa - asa_c:+.1f} / {asa - asa_h:+.1f} s",
        f"longest wait: {max(all_waits, default=0):.1f} s; occupancy {occupancy:.1%} (talking, "
        f"over the whole run with its drain)",
        f"dispatch delay (operator free -> phone rung, real ms): p50 {pct(delays, 0.5):.0f}, "
        f"p95 {pct(delays, 0.95):.0f} (n={len(delays)})",
        f"webhooks (callers'): p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} "
        f"ms (n={len(latencies)})",
        f"invariants: operator rung for two callers at once: {len(overlaps)} (stand-in), "
        f"{overlap_db} (legs on record); stranded callers: {len(stranded)}; "
        f"callers not ending bridged/abandoned: "
        f"{sum(1 for o in outcomes.values() if o not in ('bridged', 'abandoned'))}; "
        f"caller errors: {len(errors)}",
    ]
    print("\n".join(lines))
    for error in errors[:5]:
        print("  ", error)
    server.close()
    twilio.close()
    ok = not overlaps and not overlap_db and not stranded and not errors
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
