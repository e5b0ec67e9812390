"""The dispatcher (an ACD): rings available operators for queued callers. No Flask.

Twilio's <Enqueue> holds a caller until something takes them out; nothing in Twilio picks
an operator. So the service does: it picks the longest-waiting caller and a free operator
who speaks the caller's language (the ticket's own operator first, then the one with the
fewest open tickets), reserves the operator in one write transaction (a unique partial
index on live legs: two threads or two nodes never ring one operator for two callers),
and then, outside the transaction, asks Twilio's REST API to call the operator. When the
operator answers, `/twilio/operator/<leg>` whispers the ticket and dials the caller's own
queue (`<Dial><Queue>call-CA...`: a queue's first caller is the one taken, so each caller
has a queue of their own).

Triggers: a caller entering the queue, an operator's leg ending, an operator becoming
available (each after its transaction commits), and a sweep every
`IVR_DISPATCH_INTERVAL` seconds on a background thread, so a restart strands nobody.
The same pass retries failed REST requests with back-off, sends the tickets' SMS, and now
and then reconciles calls whose final status never arrived. Every time here is real
elapsed time (the wall clock), never IVR_NOW's business clock.

This module is the core (the pass, reserving, placing, the legs' life, health); the pure
decisions are in `ivr.dispatch_rules`, and the SMS and the reconciliation are mixins of
`Dispatcher` in `ivr.dispatch_sms` and `ivr.dispatch_reconcile`. Their names are
importable from here as before.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from ivr import db as database
from ivr.calls import FINAL_CALL_STATUSES, CallDesk
from ivr.db import acd as acd_store
from ivr.db import audit as audit_store
from ivr.db import calls as call_store
from ivr.db import core
from ivr.dispatch_reconcile import Reconciling
from ivr.dispatch_rules import (
    BACKOFF_SECONDS,
    LEG_SID_PATTERN,
    PLACING_LEASE,
    SPEED_OF_ANSWER_WINDOW,
    backoff,
    estimate_wait_minutes,
    line_number,
    new_leg_sid,
    pick_operator,
)
from ivr.dispatch_sms import MAX_SMS_ATTEMPTS, SMS_STATUS_URL, SmsSending
from ivr.operators import Operator, on_shift, operator_from_row
from ivr.vocabulary import AuditAction, EventKind, LegPurpose, LegState, Step

# Names that lived here before the split, still importable from ivr.dispatch.
__all__ = [
    "BACKOFF_SECONDS",
    "FAILED_CALLBACK_RESULTS",
    "LEG_SID_PATTERN",
    "MAX_SMS_ATTEMPTS",
    "OPERATOR_STATUS_URL",
    "OPERATOR_URL",
    "PLACING_LEASE",
    "RECONCILE_EVERY",
    "RESERVATION_MARGIN",
    "RING_AGAIN_AFTER_SECONDS",
    "SMS_STATUS_URL",
    "SPEED_OF_ANSWER_WINDOW",
    "Dispatcher",
    "RestHealth",
    "TwilioRest",
    "backoff",
    "estimate_wait_minutes",
    "line_number",
    "new_leg_sid",
    "pick_operator",
]

log = logging.getLogger("ivr.dispatch")

# A reservation outlives the ring time by this much (placing the call, late callbacks).
RESERVATION_MARGIN = timedelta(seconds=20)
RECONCILE_EVERY = timedelta(seconds=60)
FAILED_CALLBACK_RESULTS = ("busy", "no-answer", "failed", "canceled")
# An operator whose phone just rang in vain (busy, no answer, failed) rests this long before
# the dispatcher rings them again (for any caller): no ringing in a tight loop.
RING_AGAIN_AFTER_SECONDS = 15

OPERATOR_URL = "/twilio/operator/{leg}"
OPERATOR_STATUS_URL = "/twilio/operator-status?leg={leg}"


class TwilioRest(Protocol):
    """The part of `ivr.twilio_api.TwilioApi` the dispatcher uses."""

    def create_call(self, **kwargs: Any) -> str: ...

    def fetch_call(self, sid: str) -> dict: ...

    def send_message(self, **kwargs: Any) -> str: ...


@dataclass
class RestHealth:
    """REST failures as /healthz shows them."""

    failures: int = 0
    retries: int = 0
    last_error: str = ""
    last_call_sid: str = ""
    last_at: str = ""


class Dispatcher(SmsSending, Reconciling):
    """Reserves operators, places their legs, sends SMS, reconciles: one pass at a time."""

    def __init__(self, desk: CallDesk, api: TwilioRest | None) -> None:
        self.desk = desk
        self.settings = desk.settings
        self.api = api
        self.health_record = RestHealth()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connections = threading.local()
        self._pass_lock = threading.Lock()
        self._last_reconcile: datetime | None = None
        # Where Twilio reaches this app when IVR_PUBLIC_URL is unset (a LocalServer's URL).
        self.base_url = ""

    # Running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the sweep on a background thread (every IVR_DISPATCH_INTERVAL seconds)."""
        if (
            self.api is None
            or self._thread is not None
            or self.settings.dispatch_interval_seconds <= 0
        ):
            return  # nothing to place without the REST adapter
        self._thread = threading.Thread(target=self._loop, name="ivr-dispatcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wake(self) -> None:
        """Something changed (a caller queued, a leg ended, an operator free): dispatch now."""
        if self.api is None:
            return
        if self._thread is not None:
            self._wake.set()
            return
        if self.settings.dispatch_interval_seconds <= 0:
            self.run_once()  # no thread (tests): in the thread that fired the trigger

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.dispatch_interval_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the sweep must survive anything, and say so
                log.exception("dispatcher pass failed; trying again at the next sweep")

    def _db(self) -> database.Database:
        db = getattr(self._connections, "db", None)
        if db is None:
            db = database.connect(self.settings.db_path, self.settings.busy_timeout_ms)
            self._connections.db = db
        return db

    def now(self) -> datetime:
        """Real elapsed time (the queue's clock)."""
        return self.desk.wall_clock.now()

    def run_once(self) -> int:
        """One pass: expire, reserve and ring, retry, send SMS, reconcile. Returns legs rung."""
        if self.api is None:
            return 0
        with self._pass_lock:
            db = self._db()
            now = self.now()
            with database.write_transaction(db):
                for leg in acd_store.expire_reservations(db, now):
                    self._leg_finished(db, leg, "expired", now)
            rung = 0
            while (leg := self.reserve_next(db)) is not None:
                rung += self.place(db, leg)
            for leg in acd_store.legs_to_place(db, self.now()):
                rung += self.place(db, leg)
            self.send_pending_sms(db)
            if self._last_reconcile is None or now - self._last_reconcile >= RECONCILE_EVERY:
                self._last_reconcile = now
                self.reconcile(db)
            return rung

    # Reserving -------------------------------------------------------------------------

    def reserve_next(self, db: database.Database) -> dict[str, Any] | None:
        """Reserve one free operator for the longest-waiting caller they can take, or None.

        One write transaction: the unique partial indexes refuse a second live leg for an
        operator or a caller, whoever else (thread or node) reserves at the same moment.
        """
        now = self.now()
        business_now = self.desk.clock.now()
        with database.write_transaction(db):
            callers = acd_store.callers_to_dispatch(db, now)
            if not callers:
                return None
            on_shift_rows = [
                row
                for row in core.rows(db.execute("SELECT * FROM operators WHERE active = 1"))
                if on_shift(operator_from_row(row), business_now)
            ]
            shift_languages = {
                language for row in on_shift_rows for language in operator_from_row(row).languages
            }
            free = [
                operator
                for operator in map(
                    operator_from_row,
                    acd_store.free_operators(
                        db, database.timestamp(now - timedelta(seconds=RING_AGAIN_AFTER_SECONDS))
                    ),
                )
                if on_shift(operator, business_now)
            ]
            for caller in callers:
                if not free:
                    return None
                operator = pick_operator(
                    caller["language"],
                    caller["operator_id"],
                    free,
                    acd_store.operators_tried(db, caller["call_sid"]),
                    shift_languages,
                )
                if operator is None:
                    continue
                leg = self._new_leg(operator, LegPurpose.QUEUE, now, caller)
                if acd_store.insert_leg(db, leg):
                    call_store.add_event_at_current_seq(
                        db,
                        caller["call_sid"],
                        self.desk.now(),
                        EventKind.OPERATOR_LEG,
                        Step.QUEUE,
                        {"leg": leg["sid"], "operator_id": operator.id, "state": "reserved"},
                    )
                    return leg
                free = [other for other in free if other.id != operator.id]
        return None

    def _new_leg(
        self,
        operator: Operator,
        purpose: str,
        now: datetime,
        caller: dict[str, Any] | None = None,
        ticket_number: str | None = None,
    ) -> dict[str, Any]:
        ring = timedelta(seconds=self.settings.dial_timeout_seconds)
        return {
            "sid": new_leg_sid(),
            "operator_id": operator.id,
            "purpose": purpose,
            "caller_call_sid": caller["call_sid"] if caller else None,
            "ticket_number": caller["ticket_number"] if caller else ticket_number,
            "state": LegState.RINGING,
            "reserved_until": core.timestamp(now + ring + RESERVATION_MARGIN),
            "next_attempt_at": core.timestamp(now),
            "created_at": core.timestamp(now),
            "updated_at": core.timestamp(now),
        }

    def reserve_callback(
        self, db: database.Database, operator_row: dict[str, Any], ticket_number: str
    ) -> dict[str, Any] | None:
        """Reserve the operator for a callback (inside the caller's transaction); None if busy."""
        operator = operator_from_row(operator_row)
        leg = self._new_leg(operator, LegPurpose.CALLBACK, self.now(), None, ticket_number)
        return leg if acd_store.insert_leg(db, leg) else None

    # Placing ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        base = self.settings.public_url.rstrip("/") or self.base_url or "http://localhost"
        return base + path

    def _from_number(self, db: database.Database, leg: dict[str, Any]) -> str:
        """The line's number the operator sees (the number the caller reached, if E.164)."""
        call = None
        if leg["caller_call_sid"]:
            call = call_store.get_call(db, leg["caller_call_sid"])
        elif leg["ticket_number"]:
            found = db.execute(
                "SELECT c.* FROM tickets t JOIN calls c ON c.call_sid = t.call_sid "
                "WHERE t.number = ?",
                [leg["ticket_number"]],
            ).fetchone()
            call = dict(found) if found else None
        return line_number(self.settings, call)

    def place(self, db: database.Database, leg: dict[str, Any]) -> int:
        """Ask Twilio to ring the operator (outside any transaction); 1 if it did."""
        now = self.now()
        with database.write_transaction(db):
            if not acd_store.claim_leg_to_place(db, leg["sid"], now, now + PLACING_LEASE):
                return 0
            operator = db.execute(
                "SELECT endpoint FROM operators WHERE id = ?", [leg["operator_id"]]
            ).fetchone()
            from_number = self._from_number(db, leg)
        attempt = (leg.get("attempts") or 0) + 1
        try:
            call_sid = self.api.create_call(
                to=operator["endpoint"],
                from_=from_number,
                url=self._url(OPERATOR_URL.format(leg=leg["sid"])),
                status_callback=self._url(OPERATOR_STATUS_URL.format(leg=leg["sid"])),
                status_callback_events=("initiated", "ringing", "answered", "completed"),
                timeout=self.settings.dial_timeout_seconds,
            )
        except Exception as error:  # noqa: BLE001 - whatever the REST side did, nobody waits on it
            self._placing_failed(db, leg, attempt, error)
            return 0
        with database.write_transaction(db):
            current = acd_store.get_leg(db, leg["sid"])
            changes: dict[str, Any] = {"error": None, "updated_at": core.timestamp(self.now())}
            if current and not current["call_sid"]:
                changes["call_sid"] = call_sid
            acd_store.update_leg(db, leg["sid"], changes)
            if leg["caller_call_sid"]:
                self._caller_event(db, leg, {"leg": leg["sid"], "state": "ringing"})
        log.info(
            "operator rung",
            extra={
                "call_sid": leg["caller_call_sid"] or "",
                "leg": leg["sid"],
                "operator_call_sid": call_sid,
                "operator_id": leg["operator_id"],
                "purpose": leg["purpose"],
            },
        )
        return 1

    def _placing_failed(
        self, db: database.Database, leg: dict[str, Any], attempt: int, error: Exception
    ) -> None:
        now = self.now()
        retryable = bool(getattr(error, "retryable", True))
        retry_at = now + backoff(attempt)
        give_up = not retryable or core.timestamp(retry_at) >= leg["reserved_until"]
        self._note_failure(leg["caller_call_sid"] or leg["ticket_number"] or "", error)
        log.warning(
            "placing an operator's call failed: %s",
            "giving up on this operator" if give_up else "retrying",
            extra={
                "call_sid": leg["caller_call_sid"] or "",
                "leg": leg["sid"],
                "ticket_number": leg["ticket_number"],
                "error": str(error)[:200],
                "status": getattr(error, "status", None),
                "code": getattr(error, "code", None),
                "attempt": attempt,
            },
        )
        with database.write_transaction(db):
            if not give_up:
                self.health_record.retries += 1
                acd_store.update_leg(
                    db,
                    leg["sid"],
                    {"next_attempt_at": core.timestamp(retry_at), "error": str(error)[:200]},
                )
                return
            acd_store.update_leg(
                db,
                leg["sid"],
                {
                    "state": LegState.ENDED,
                    "result": "error",
                    "error": str(error)[:200],
                    "ended_at": core.timestamp(now),
                    "updated_at": core.timestamp(now),
                },
            )
            self._leg_finished(db, {**leg, "state": LegState.RINGING}, "error", now)
            if leg["caller_call_sid"]:
                acd_store.defer_entry(db, leg["caller_call_sid"], now + backoff(attempt))

    def _note_failure(self, about: str, error: Exception) -> None:
        record = self.health_record
        record.failures += 1
        record.last_error = f"{type(error).__name__}: {str(error)[:200]}"
        record.last_call_sid = about
        record.last_at = core.timestamp(self.now())

    def _caller_event(self, db: database.Database, leg: dict[str, Any], detail: dict) -> None:
        call_sid = leg["caller_call_sid"]
        if call_store.get_call(db, call_sid) is None:
            return
        call_store.add_event_at_current_seq(
            db,
            call_sid,
            self.desk.now(),
            EventKind.OPERATOR_LEG,
            Step.QUEUE,
            {"operator_id": leg["operator_id"], **detail},
        )

    # The leg's life (called inside the webhook's transaction) --------------------------

    def leg_answered(self, db: database.Database, leg: dict[str, Any], call_sid: str) -> None:
        """The operator picked up (Twilio fetched the leg's Url)."""
        now = self.now()
        if leg["state"] != LegState.RINGING:
            return
        acd_store.update_leg(
            db,
            leg["sid"],
            {
                "state": LegState.ANSWERED,
                "call_sid": leg["call_sid"] or call_sid,
                "answered_at": core.timestamp(now),
                "updated_at": core.timestamp(now),
            },
        )
        if leg["caller_call_sid"]:
            acd_store.mark_answered(db, leg["caller_call_sid"], now)
            self._caller_event(db, leg, {"leg": leg["sid"], "state": "answered"})

    def leg_status(
        self, db: database.Database, leg: dict[str, Any], call_sid: str, status: str
    ) -> bool:
        """The leg's status callback; True when the operator is free again (dispatch now)."""
        now = self.now()
        if leg["call_sid"] is None:
            acd_store.update_leg(db, leg["sid"], {"call_sid": call_sid})
        if status == "in-progress":
            self.leg_answered(db, {**leg, "call_sid": leg["call_sid"] or call_sid}, call_sid)
            return False
        if status not in FINAL_CALL_STATUSES or leg["state"] == LegState.ENDED:
            return False
        changes: dict[str, Any] = {
            "state": LegState.ENDED,
            "ended_at": core.timestamp(now),
            "updated_at": core.timestamp(now),
        }
        if leg["purpose"] == LegPurpose.QUEUE:
            changes["result"] = status  # a callback's result is the customer's (below)
        acd_store.update_leg(db, leg["sid"], changes)
        self._leg_finished(db, leg, status, now)
        return True

    def callback_dialled(
        self, db: database.Database, leg: dict[str, Any], dial_status: str
    ) -> None:
        """How the customer's phone answered a callback (the <Dial> action's DialCallStatus)."""
        acd_store.update_leg(
            db, leg["sid"], {"result": dial_status, "updated_at": core.timestamp(self.now())}
        )

    def _leg_finished(
        self, db: database.Database, leg: dict[str, Any], status: str, now: datetime
    ) -> None:
        """Note how a leg ended: on the caller's timeline, or as a callback attempt."""
        if leg["purpose"] == LegPurpose.QUEUE and leg["caller_call_sid"]:
            answered = leg["state"] == LegState.ANSWERED or leg.get("answered_at")
            self._caller_event(
                db,
                leg,
                {"leg": leg["sid"], "state": "ended", "answered": bool(answered), "result": status},
            )
            return
        if leg["purpose"] != LegPurpose.CALLBACK or not leg["ticket_number"]:
            return
        current = acd_store.get_leg(db, leg["sid"]) or leg
        if current["result"] in ("completed", "answered"):
            result = "answered"
        elif current["result"] in FAILED_CALLBACK_RESULTS:
            result = current["result"]
        else:
            # The operator's own phone did not take the call: the customer was never dialled.
            result = f"operator-{status}" if status != "completed" else "failed"
        if current["result"] != result:
            acd_store.update_leg(db, leg["sid"], {"result": result})
        failed = result != "answered"
        acd_store.record_callback_result(db, leg["ticket_number"], result, failed)
        audit_store.add_audit(
            db,
            now,
            leg["operator_id"],
            AuditAction.CALLBACK,
            leg["ticket_number"],
            {"leg": leg["sid"], "result": result},
        )

    # Health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What /healthz shows: configured, running, REST failures and pending retries."""
        record = self.health_record
        return {
            "configured": self.api is not None,
            "sweeping": self._thread is not None and self._thread.is_alive(),
            "failures": record.failures,
            "retries": record.retries,
            "last_error": record.last_error,
            "last_error_call_sid": record.last_call_sid,
            "last_error_at": record.last_at,
        }
