"""The calls the REST stand-in places (`OutboundLeg`): ring a phone, run TwiML, bridge.

An answered leg requests its Url (a signed webhook, Direction=outbound-api) or runs its
Twiml, checked by the same table as the caller's leg (twiml_rules), and executes it:
<Say>/<Play>/<Pause> (heard by the phone), <Gather>, <Redirect>, <Hangup>, <Dial><Queue>
(bridges the longest-waiting caller of that queue), <Dial><Number> (rings that number's
phone as a child leg and bridges it). Status callbacks go out signed for the events asked for.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import xml.etree.ElementTree as ElementTree
from email.utils import formatdate
from typing import Any, Protocol

from ivr.emulator.caller import Bridge, Heard
from ivr.emulator.http import API_VERSION, new_sid
from ivr.emulator.phones import Phone
from ivr.emulator.queue_registry import QueueRegistry
from ivr.emulator.twiml_rules import WHISPER_VERBS, TwimlRefused, check

# The Calls resource: "Timeout" (how long to let the call ring), 60 s unless given.
RING_TIMEOUT_DEFAULT = 60
# The <Dial> page: timeout 30 s; the <Gather> page: timeout 5 s.
DIAL_TIMEOUT_DEFAULT = 30
GATHER_TIMEOUT_DEFAULT = 5
DONE = ("completed", "busy", "no-answer", "failed", "canceled")


def now_rfc2822() -> str:
    """Now as the REST API writes dates (RFC 2822, +0000)."""
    return formatdate(usegmt=False).replace("-0000", "+0000")


class StandIn(Protocol):
    """The part of `ivr.emulator.rest.TwilioStandIn` a leg uses."""

    account_sid: str
    time_scale: float
    queues: QueueRegistry

    def phone_for(self, number: str) -> Phone: ...

    def register(self, leg: OutboundLeg) -> None: ...

    def spawn(self, work) -> threading.Thread: ...

    def post(self, url: str, params: dict[str, str], kind: str = "webhook") -> tuple[int, str]: ...


class _Hangup(Exception):
    """The leg is over: its phone hung up, or a REST update ended it."""


class _Redirected(Exception):
    """A REST update gave the live leg new TwiML."""


class OutboundLeg:
    """One call the stand-in places: rings a phone, runs TwiML, bridges, reports status."""

    def __init__(
        self,
        twilio: StandIn,
        to: str,
        from_: str,
        url: str | None = None,
        twiml: str | None = None,
        status_callback: str | None = None,
        events: tuple[str, ...] = ("completed",),
        ring_timeout: int = RING_TIMEOUT_DEFAULT,
        direction: str = "outbound-api",
        parent_sid: str | None = None,
    ):
        self.twilio = twilio
        self.sid = new_sid("CA")
        self.to, self.from_ = to, from_
        self.url, self.twiml = url, twiml
        self.status_callback = status_callback
        self.events = events
        self.ring_timeout = ring_timeout
        self.direction = direction
        self.parent_sid = parent_sid
        self.phone = twilio.phone_for(to)
        self.status = "queued"
        self.date_created = now_rfc2822()
        self.start_time: str | None = None
        self.end_time: str | None = None
        self.duration: int | None = None
        self.heard: list[Heard] = []  # what the phone heard and did
        self.errors: list[str] = []
        self.connected_to: str | None = None
        self.dial_results: list[dict[str, str]] = []  # what each <Dial> action was told
        self._answered_at = 0.0
        self._hangup_at = float("inf")
        self._sequence = 0
        self._update = threading.Event()  # a REST update arrived
        self._hangup_requested = ""  # "completed" / "canceled" by REST
        self._new_document: tuple[str | None, str | None] | None = None  # (url, twiml)
        self._document_url = ""
        self._lock = threading.Lock()
        self.finished = threading.Event()

    # The REST side -------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        """The Call resource's JSON."""
        account = self.twilio.account_sid
        return {
            "sid": self.sid,
            "account_sid": account,
            "parent_call_sid": self.parent_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "status": self.status,
            "direction": self.direction,
            "duration": str(self.duration) if self.duration is not None else None,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "date_created": self.date_created,
            "date_updated": now_rfc2822(),
            "answered_by": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "trunk_sid": None,
            "api_version": API_VERSION,
            "uri": f"/{API_VERSION}/Accounts/{account}/Calls/{self.sid}.json",
            "subresource_uris": {},
        }

    def update(self, url: str | None, twiml: str | None, status: str | None) -> str | None:
        """Apply a REST update; returns a problem (Twilio's 21220) or None."""
        with self._lock:
            if self.status in DONE:
                return "Call is not in-progress. Cannot redirect."
            if status in ("completed", "canceled"):
                if status == "canceled" and self.status == "in-progress":
                    return None  # the Call page: canceled only ends queued or ringing calls
                self._hangup_requested = status
            elif url or twiml:
                if self.status != "in-progress":
                    self.url, self.twiml = url, twiml  # runs when the phone answers
                    return None
                self._new_document = (url, twiml)
            self._update.set()
            return None

    # Running the leg -----------------------------------------------------------------------

    def run(self) -> None:
        """Ring, answer (or not), run the TwiML, end; the status callbacks on the way."""
        try:
            outcome = self.ring()
            if outcome == "answered":
                self._answer()
                try:
                    self._execute(self._first_document())
                except _Hangup:
                    pass
                self._end("completed")
            else:
                self._end(outcome)
        except Exception as error:  # a stand-in bug must not hang the test run silently
            self.errors.append(f"stand-in error: {type(error).__name__}: {error}")
            if self.status not in DONE:
                self._end("failed")
        finally:
            self.finished.set()

    def ring(self) -> str:
        """Ring the phone: answered, busy, no-answer, failed or canceled."""
        self._callback("initiated", "initiated")
        self.status = "ringing"
        self._callback("ringing", "ringing")
        phone, scale = self.phone, self.twilio.time_scale
        if phone.fail:
            return "failed"
        if phone.decline:
            return "canceled" if self._wait(phone.answer_after * scale) else "busy"
        if phone.no_answer or phone.answer_after >= self.ring_timeout:
            return "canceled" if self._wait(self.ring_timeout * scale) else "no-answer"
        return "canceled" if self._wait(phone.answer_after * scale) else "answered"

    def _wait(self, seconds: float) -> bool:
        """Wait while ringing; True when a REST update ended the call meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            if self._hangup_requested:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._update.wait(remaining)
            self._update.clear()

    def _answer(self) -> None:
        self.status = "in-progress"
        self.start_time = now_rfc2822()
        self._answered_at = time.monotonic()
        self._hangup_at = self._answered_at + self.phone.talk_seconds * self.twilio.time_scale
        self.heard.append(Heard("answer", self.to))
        self._callback("answered", "in-progress")

    def _end(self, status: str) -> None:
        with self._lock:
            self.status = status
            self.end_time = now_rfc2822()
            self.duration = round(time.monotonic() - self._answered_at) if self._answered_at else 0
        self.heard.append(Heard("hangup", status))
        self._callback("completed", status)

    def _sleep(self, seconds: float) -> None:
        """Time passes on the leg; raises when the phone hangs up or an update arrives."""
        deadline = time.monotonic() + seconds
        while True:
            self._check()
            now = time.monotonic()
            if now >= deadline:
                return
            self._update.wait(min(deadline, self._hangup_at) - now)
            self._update.clear()

    def _check(self) -> None:
        if self._hangup_requested or time.monotonic() >= self._hangup_at:
            raise _Hangup
        if self._new_document is not None:
            raise _Redirected

    # TwiML -------------------------------------------------------------------------------

    def params(self, status: str | None = None) -> dict[str, str]:
        """The parameters Twilio sends with this leg's webhooks."""
        params = {
            "CallSid": self.sid,
            "AccountSid": self.twilio.account_sid,
            "From": self.from_,
            "To": self.to,
            "Caller": self.from_,
            "Called": self.to,
            "CallStatus": status or self.status,
            "ApiVersion": API_VERSION,
            "Direction": self.direction,
        }
        if self.parent_sid:
            params["ParentCallSid"] = self.parent_sid
        return params

    def _first_document(self) -> tuple[ElementTree.Element, str] | None:
        if self.twiml is not None:
            return self._checked(200, self.twiml, "Twiml")
        return self._fetch(self.url or "")

    def _fetch(
        self, url: str, extra: dict[str, str] | None = None
    ) -> tuple[ElementTree.Element, str] | None:
        absolute = urllib.parse.urljoin(self._document_url or url, url)
        status, body = self.twilio.post(absolute, {**self.params(), **(extra or {})})
        return self._checked(status, body, absolute)

    def _checked(self, status: int, body: str, url: str) -> tuple[ElementTree.Element, str] | None:
        try:
            if status != 200:
                raise TwimlRefused(11200, f"HTTP {status}")
            return check(body), url
        except TwimlRefused as refused:
            # Twilio: "an application error has occurred", and the call ends.
            self.errors.append(f"{refused} from {url}")
            self.heard.append(Heard("error", str(refused)))
            return None

    def _execute(self, document: tuple[ElementTree.Element, str] | None) -> None:
        while document is not None:
            try:
                document = self._run_document(*document)
            except _Redirected:
                with self._lock:
                    url, twiml = self._new_document or (None, None)
                    self._new_document = None
                    self._update.clear()
                self.heard.append(Heard("redirect", url or "Twiml"))
                document = self._checked(200, twiml, "Twiml") if twiml else self._fetch(url)

    def _run_document(self, root: ElementTree.Element, url: str):
        """Run a document; returns the next one (an action's, a <Redirect>'s) or None."""
        self._document_url = url
        pending = list(root)
        while pending:
            self._check()
            verb = pending.pop(0)
            if verb.tag == "Say":
                self.heard.append(Heard("say", (verb.text or "").strip(), verb.get("language", "")))
            elif verb.tag == "Play":
                self.heard.append(Heard("play", (verb.text or "").strip()))
            elif verb.tag == "Pause":
                self._sleep(float(verb.get("length", "1")) * self.twilio.time_scale)
            elif verb.tag == "Gather":
                answer = self._gather(verb)
                if answer is not None:
                    return answer
            elif verb.tag == "Redirect":
                return self._fetch((verb.text or "").strip())
            elif verb.tag in ("Hangup", "Reject"):
                return None
            elif verb.tag == "Dial":
                answer = self._dial(verb)
                if answer is not False:
                    return answer
            elif verb.tag == "Leave":
                continue  # outside a queue's waitUrl, <Leave> does nothing
            else:
                self.errors.append(f"the stand-in does not play <{verb.tag}> on a leg yet")
                return None
        return None  # end of document: Twilio hangs up

    def _gather(self, verb: ElementTree.Element):
        for child in verb:
            if child.tag == "Say":
                self.heard.append(Heard("say", (child.text or "").strip()))
            elif child.tag == "Play":
                self.heard.append(Heard("play", (child.text or "").strip()))
        keys = self.phone.press
        if keys:
            self._sleep(0)
            self.heard.append(Heard("keys", keys))
            digits = keys
            limit = verb.get("numDigits")
            if limit and limit.isdigit():
                digits = digits[: int(limit)]
            return self._fetch(verb.get("action") or self._document_url, {"Digits": digits})
        self._sleep(float(verb.get("timeout", GATHER_TIMEOUT_DEFAULT)) * self.twilio.time_scale)
        self.heard.append(Heard("silence", ""))
        if verb.get("actionOnEmptyResult") == "true":
            return self._fetch(verb.get("action") or self._document_url, {"Digits": ""})
        return None  # a time-out: the next verb

    def _dial(self, verb: ElementTree.Element):
        """Run a <Dial>: returns the action's document, None (the leg is over) or False
        (no action: go on with the next verb)."""
        timeout = int(verb.get("timeout", DIAL_TIMEOUT_DEFAULT))
        noun = next(iter(verb), None)
        if noun is None or noun.tag == "Number":
            number = (noun.text if noun is not None else verb.text or "").strip()
            result = self._dial_number(number, verb.get("callerId") or self.from_, timeout, noun)
        elif noun.tag == "Queue":
            result = self._dial_queue(noun, timeout)
        else:
            self.errors.append(f"the stand-in does not dial <{noun.tag}> yet")
            return None
        self.dial_results.append(result)
        self.heard.append(Heard("dial", f"{result['DialCallStatus']}"))
        action = verb.get("action")
        gone = self._hangup_requested or time.monotonic() >= self._hangup_at
        if gone:
            # The leg that ran <Dial> hung up: Twilio still requests the action (the call
            # is over, so the answer is not played).
            if action:
                absolute = urllib.parse.urljoin(self._document_url, action)
                self.twilio.post(absolute, {**self.params("completed"), **result})
            raise _Hangup
        if self._new_document is not None:
            raise _Redirected
        if action:
            return self._fetch(action, result)
        return False

    def _dial_queue(self, noun: ElementTree.Element, timeout: int) -> dict[str, str]:
        """<Dial><Queue> (the <Queue> page): connect the queue's first caller; with nobody
        waiting, wait until someone joins or the <Dial> timeout; a queue that does not
        exist is an error status."""
        name = (noun.text or "").strip()
        if not self.twilio.queues.exists(name):
            return {"DialCallStatus": "failed", "DialCallDuration": "0"}
        deadline = min(time.monotonic() + timeout * self.twilio.time_scale, self._hangup_at)
        whisper = noun.get("url")
        if whisper:
            whisper = urllib.parse.urljoin(self._document_url, whisper)
        while True:
            caller = self.twilio.queues.take(name, deadline, self._update)
            if caller is None:
                # Timed out: the dial ends unanswered (the <Queue> page names no status
                # for this; no-answer is the <Dial> page's for "nobody picked up").
                self._check()
                return {"DialCallStatus": "no-answer", "DialCallDuration": "0"}
            bridge = caller.dequeue(self.sid, self.to, whisper or "")
            if bridge is not None:
                break
        self.connected_to = caller.result.call_sid
        self.heard.append(Heard("bridge", caller.from_))
        ended_by = self._talk(bridge)
        if ended_by != "caller":
            # The caller stays on: their <Enqueue> action runs (on their own thread, as
            # their call goes on independently of this one).
            self.twilio.spawn(caller.bridge_over)
        return {
            "DialCallStatus": "completed",
            "DialCallSid": caller.result.call_sid,
            "DialCallDuration": str(bridge.seconds),
            "QueueSid": bridge.queue_sid,
        }

    def _talk(self, bridge: Bridge) -> str:
        """Talk until either side leaves; returns who left ("caller", "operator", ...)."""
        while not bridge.over:
            if self._hangup_requested or time.monotonic() >= self._hangup_at:
                bridge.end("operator")
                break
            if self._new_document is not None:
                bridge.end("redirect")
                break
            bridge.wait(max(0.0, min(self._hangup_at - time.monotonic(), 0.05)))
        return bridge.ended_by

    def _dial_number(
        self, number: str, caller_id: str, timeout: int, noun: ElementTree.Element | None
    ) -> dict[str, str]:
        """<Dial><Number> (the <Dial> and <Number> pages): a child leg rings the number."""
        events: tuple[str, ...] = ("completed",)
        callback = None
        if noun is not None and noun.get("statusCallback"):
            callback = urllib.parse.urljoin(self._document_url, noun.get("statusCallback"))
            events = tuple(noun.get("statusCallbackEvent", "completed").split())
        child = OutboundLeg(
            self.twilio,
            to=number,
            from_=caller_id,
            status_callback=callback,
            events=events,
            ring_timeout=timeout,
            direction="outbound-dial",
            parent_sid=self.sid,
        )
        child._document_url = self._document_url
        self.twilio.register(child)
        outcome = child.ring()
        if outcome != "answered":
            child._end(outcome)
            child.finished.set()
            return {"DialCallStatus": outcome, "DialCallSid": child.sid, "DialCallDuration": "0"}
        child._answer()
        if noun is not None and noun.get("url"):
            # The <Number url> TwiML plays to the called party before they are connected.
            document = child._fetch(noun.get("url"))
            if document is not None:
                refused = [verb.tag for verb in document[0] if verb.tag not in WHISPER_VERBS]
                if refused:
                    child.errors.append(f"<{refused[0]}> is not allowed in a <Number url>")
                else:
                    try:
                        child._run_document(*document)
                    except (_Hangup, _Redirected):
                        pass
        self.connected_to = number
        child.connected_to = self.to
        self.heard.append(Heard("bridge", number))
        started = time.monotonic()
        while True:
            now = time.monotonic()
            if self._hangup_requested or self._new_document is not None:
                break
            if now >= self._hangup_at or now >= child._hangup_at or child._hangup_requested:
                break
            self._update.wait(min(self._hangup_at, child._hangup_at, now + 0.05) - now)
            self._update.clear()
        child._end("completed")
        child.finished.set()
        return {
            "DialCallStatus": "completed",
            "DialCallSid": child.sid,
            "DialCallDuration": str(round(time.monotonic() - started)),
        }

    def _callback(self, event: str, status: str) -> None:
        """The status callback for an event, if the call asked for it (signed)."""
        if not self.status_callback or event not in self.events:
            return
        params = {
            **self.params(status),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(self._sequence),
            "Timestamp": now_rfc2822(),
        }
        if event == "completed":
            params["CallDuration"] = str(self.duration or 0)
        self._sequence += 1
        self.twilio.post(self.status_callback, params, kind="status")
