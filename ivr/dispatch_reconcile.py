"""The dispatcher's reconciliation: calls and legs whose final status never reached us."""

from __future__ import annotations

import logging
from datetime import timedelta

from ivr import db as database
from ivr.calls import FINAL_CALL_STATUSES, is_ascii_number
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import core
from ivr.vocabulary import EventKind, LegState

log = logging.getLogger("ivr.dispatch")


class Reconciling:
    """Asking the REST API how calls really ended: a mixin of `Dispatcher` (ivr/dispatch.py).

    It uses the dispatcher's `api`, `settings`, `desk`, `now`, `leg_status` and
    `_note_failure`.
    """

    def reconcile(self, db: database.Database) -> int:
        """Ask Twilio for the final status of calls and legs whose end never reached us.

        A status callback refused while the database was locked (Twilio does not retry
        those) or simply lost leaves a call without an end: after
        IVR_RECONCILE_AFTER_MINUTES the REST API says how it really ended.
        """
        age = timedelta(minutes=self.settings.reconcile_after_minutes)
        fixed = 0
        cutoff = core.timestamp(self.desk.clock.now() - age)
        for call in acd_store.calls_without_end(db, cutoff):
            fixed += self._reconcile_call(db, call["call_sid"])
        for leg in acd_store.unfinished_legs(db, self.now() - age):
            info = self._fetch(leg["call_sid"])
            if info and info.get("status") in FINAL_CALL_STATUSES:
                with database.write_transaction(db):
                    current = acd_store.get_leg(db, leg["sid"])
                    if current and current["state"] != LegState.ENDED:
                        self.leg_status(db, current, leg["call_sid"], info["status"])
                        fixed += 1
        return fixed

    def _fetch(self, call_sid: str) -> dict | None:
        try:
            return self.api.fetch_call(call_sid)
        except Exception as error:  # noqa: BLE001 - tried again at the next reconciliation
            self._note_failure(call_sid, error)
            log.warning(
                "fetching a call's status failed; trying again later",
                extra={"call_sid": call_sid, "error": str(error)[:200]},
            )
            return None

    def _reconcile_call(self, db: database.Database, call_sid: str) -> int:
        info = self._fetch(call_sid)
        status = (info or {}).get("status")
        if status not in FINAL_CALL_STATUSES:
            return 0
        duration = str((info or {}).get("duration") or "")
        with database.write_transaction(db):
            call = call_store.get_call(db, call_sid)
            if call is None or call["ended_at"]:
                return 0
            self.desk.call_status(
                db,
                call_sid,
                status,
                duration if is_ascii_number(duration) else "",
                to_number=call["to_number"] or "",
                from_number=call["from_number"] or "",
                account_sid=call["account_sid"] or "",
            )
            call_store.add_event_at_current_seq(
                db,
                call_sid,
                self.desk.now(),
                EventKind.RECONCILED,
                None,
                {"status": status, "duration": duration},
            )
        log.info("call reconciled from the REST API", extra={"call_sid": call_sid})
        return 1
