"""The dispatcher's SMS: sending the tickets' messages with back-off, and their status."""

from __future__ import annotations

import logging
from typing import Any

from ivr import db as database
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import core
from ivr.dispatch_rules import PLACING_LEASE, backoff
from ivr.vocabulary import EventKind

log = logging.getLogger("ivr.dispatch")

MAX_SMS_ATTEMPTS = 6
SMS_STATUS_URL = "/twilio/sms-status"


class SmsSending:
    """Sending the tickets' SMS: a mixin of `Dispatcher` (ivr/dispatch.py).

    It uses the dispatcher's `api`, `settings`, `desk`, `now`, `health_record`, `_url` and
    `_note_failure`.
    """

    def send_pending_sms(self, db: database.Database) -> int:
        """Send the tickets' SMS that are due; retry failures with back-off. Returns sent."""
        sent = 0
        for message in acd_store.sms_to_send(db, self.now()):
            now = self.now()
            with database.write_transaction(db):
                if not acd_store.claim_sms(db, message["ticket_number"], now, now + PLACING_LEASE):
                    continue
            attempt = message["attempts"] + 1
            try:
                message_sid = self.api.send_message(
                    to=message["to_number"],
                    from_=self.settings.sms_from,
                    body=message["body"],
                    status_callback=self._url(SMS_STATUS_URL),
                )
            except Exception as error:  # noqa: BLE001 - a failed SMS never stops anything else
                self._sms_failed(db, message, attempt, error)
                continue
            with database.write_transaction(db):
                acd_store.update_sms(
                    db,
                    message["ticket_number"],
                    {
                        "message_sid": message_sid,
                        "status": "queued",
                        "error": None,
                        "updated_at": core.timestamp(self.now()),
                    },
                )
                self._sms_event(db, message, {"status": "queued", "message_sid": message_sid})
            sent += 1
        return sent

    def _sms_failed(
        self, db: database.Database, message: dict[str, Any], attempt: int, error: Exception
    ) -> None:
        retryable = bool(getattr(error, "retryable", True))
        give_up = not retryable or attempt >= MAX_SMS_ATTEMPTS
        self._note_failure(message["call_sid"], error)
        log.warning(
            "sending the ticket's SMS failed: %s",
            "giving up" if give_up else "retrying",
            extra={
                "call_sid": message["call_sid"],
                "ticket_number": message["ticket_number"],
                "error": str(error)[:200],
                "attempt": attempt,
            },
        )
        changes: dict[str, Any] = {
            "error": str(error)[:200],
            "updated_at": core.timestamp(self.now()),
        }
        if give_up:
            changes["status"] = "failed"
        else:
            self.health_record.retries += 1
            changes["next_attempt_at"] = core.timestamp(self.now() + backoff(attempt))
        with database.write_transaction(db):
            acd_store.update_sms(db, message["ticket_number"], changes)
            if give_up:
                self._sms_event(db, message, {"status": "failed", "error": str(error)[:200]})

    def _sms_event(self, db: database.Database, message: dict[str, Any], detail: dict) -> None:
        call_sid = message["call_sid"]
        call_store.add_event_at_current_seq(
            db,
            call_sid,
            self.desk.now(),
            EventKind.SMS,
            None,
            {"ticket_number": message["ticket_number"], **detail},
        )

    def sms_status(self, db: database.Database, message_sid: str, status: str) -> bool:
        """A message's status callback (inside the webhook's transaction); False if unknown."""
        message = acd_store.sms_by_sid(db, message_sid)
        if message is None:
            return False
        if message["status"] == status:
            return True
        acd_store.update_sms(
            db,
            message["ticket_number"],
            {"status": status, "updated_at": core.timestamp(self.now())},
        )
        self._sms_event(db, message, {"status": status, "message_sid": message_sid})
        if status in ("failed", "undelivered"):
            log.warning(
                "the ticket's SMS was not delivered",
                extra={"call_sid": message["call_sid"], "ticket_number": message["ticket_number"]},
            )
        return True
