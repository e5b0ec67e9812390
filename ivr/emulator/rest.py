"""Twilio's REST API, played on loopback: calls placed, moved and ended, messages sent.

`TwilioStandIn` is a real HTTP server (127.0.0.1) answering the requests the service's
adapter (ivr/twilio_api.py) makes through the `twilio` package, on Twilio's paths with
Twilio's parameter names, Basic auth and error bodies (the Call and Message resource pages
under https://www.twilio.com/docs/voice/api/call-resource and
https://www.twilio.com/docs/messaging/api/message-resource):

- POST /2010-04-01/Accounts/{AccountSid}/Calls.json (To, From, Url or Twiml,
  StatusCallback, StatusCallbackEvent, Timeout, CallerId) places an outbound leg;
- POST .../Calls/{Sid}.json (Url, Twiml, Status=completed|canceled) moves or ends a call,
  the stand-in's own legs and the inbound callers attached to it alike;
- GET .../Calls/{Sid}.json reads it;
- POST .../Messages.json (To, From or MessagingServiceSid, Body, StatusCallback) records a
  message; GET .../Messages/{Sid}.json reads it.

Each outbound leg rings a phone whose behaviour the test or scenario sets per number
(`Phone`: answer after N seconds, decline = busy, no answer, fail, hang up after
`talk_seconds`, keys to press at a <Gather>). An answered leg requests its Url (a signed
webhook, Direction=outbound-api) or runs its Twiml, checked by the same table as the
caller's leg (twiml_rules), and executes it: <Say>/<Play>/<Pause> (heard by the phone),
<Gather>, <Redirect>, <Hangup>, <Dial><Queue> (bridges the longest-waiting caller of that
queue, see `QueueRegistry`), <Dial><Number> (rings that number's phone and bridges it).
Status callbacks go out signed for the events asked for. Nothing happens that the service
did not ask for: a queued caller is bridged only by a leg the service created.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field, fields
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ivr.emulator.caller import Bridge, EmulatedCall, Heard
from ivr.emulator.http import API_VERSION, HttpTransport, Transport, new_sid, sign
from ivr.emulator.twiml_rules import WHISPER_VERBS, TwimlRefused, check

# The Calls resource: "Timeout" (how long to let the call ring), 60 s unless given.
RING_TIMEOUT_DEFAULT = 60
# The <Dial> page: timeout 30 s; the <Gather> page: timeout 5 s.
DIAL_TIMEOUT_DEFAULT = 30
GATHER_TIMEOUT_DEFAULT = 5
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
# The Message resource's final statuses a destination can end in.
MESSAGE_OUTCOMES = ("delivered", "undelivered", "failed")
# Error codes in the Message status callback (Twilio's error dictionary): 30003
# "Unreachable destination handset", 30008 "Unknown error".
MESSAGE_ERRORS = {"undelivered": "30003", "failed": "30008"}
DONE = ("completed", "busy", "no-answer", "failed", "canceled")


def _now_rfc2822() -> str:
    return formatdate(usegmt=False).replace("-0000", "+0000")


@dataclass
class Phone:
    """How one number's phone behaves when the stand-in rings it (seconds are scaled by
    the stand-in's `time_scale`)."""

    answer_after: float = 1.0
    decline: bool = False  # rejects the call: busy
    no_answer: bool = False  # rings until the caller gives up: no-answer
    fail: bool = False  # cannot be reached: failed
    talk_seconds: float = 30.0  # hangs up this long after answering
    press: str = ""  # keys typed at each <Gather> (e.g. "1" to accept a whisper)
    message_status: str = "delivered"  # how an SMS to this number ends

    def __post_init__(self) -> None:
        if self.message_status not in MESSAGE_OUTCOMES:
            raise ValueError(
                f"message_status must be one of {', '.join(MESSAGE_OUTCOMES)}, "
                f"got {self.message_status!r}"
            )
        if self.answer_after < 0 or self.talk_seconds < 0:
            raise ValueError("answer_after and talk_seconds cannot be negative")
        if any(key not in "0123456789*#" for key in self.press):
            raise ValueError(f"press takes keys 0-9 * #, got {self.press!r}")


PHONE_KEYS = frozenset(item.name for item in fields(Phone))


def phone_from(raw: dict[str, Any], where: str = "phone") -> Phone:
    """A Phone from a scenario's table; unknown keys and bad values are refused."""
    unknown = set(raw) - PHONE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return Phone(**raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


class QueueRegistry:
    """Twilio's call queues: who waits in which, longest-waiting first."""

    def __init__(self):
        self._changed = threading.Condition()
        self._waiting: dict[str, list[EmulatedCall]] = {}
        self.sids: dict[str, str] = {}  # queue name -> QueueSid (a queue is made on demand)

    def join(self, name: str, call: EmulatedCall) -> str:
        """<Enqueue>: the call waits at the back of the queue; returns the QueueSid."""
        with self._changed:
            self._waiting.setdefault(name, []).append(call)
            self._changed.notify_all()
            return self.sids.setdefault(name, new_sid("QU"))

    def leave(self, call: EmulatedCall) -> None:
        """The call is out of its queue (left, hung up, redirected)."""
        with self._changed:
            for members in self._waiting.values():
                if call in members:
                    members.remove(call)

    def position(self, call: EmulatedCall) -> tuple[int, int]:
        """(1-based position, queue size) of a waiting call."""
        with self._changed:
            for members in self._waiting.values():
                if call in members:
                    return members.index(call) + 1, len(members)
        return 1, 1

    def waiting(self, name: str) -> list[EmulatedCall]:
        """The calls waiting in a queue, front first."""
        with self._changed:
            return list(self._waiting.get(name, []))

    def exists(self, name: str) -> bool:
        """Whether anyone ever enqueued into this queue (Twilio makes queues on demand)."""
        with self._changed:
            return name in self.sids

    def take(self, name: str, deadline: float, stop: threading.Event) -> EmulatedCall | None:
        """The front caller of the queue, waiting until one joins, `deadline` or `stop`."""
        with self._changed:
            while True:
                members = self._waiting.get(name)
                if members:
                    return members.pop(0)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stop.is_set():
                    return None
                self._changed.wait(min(remaining, 0.05))


@dataclass
class Message:
    """One message as the Message resource holds it."""

    sid: str
    to: str
    from_: str
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    status: str = "queued"
    date_created: str = field(default_factory=_now_rfc2822)
    callbacks: list[str] = field(default_factory=list)  # MessageStatus values posted

    def as_json(self, account_sid: str) -> dict[str, Any]:
        """The Message resource's JSON."""
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "messaging_service_sid": self.messaging_service_sid,
            "to": self.to,
            "from": self.from_ or None,
            "body": self.body,
            "status": self.status,
            "direction": "outbound-api",
            "num_segments": "1",
            "num_media": "0",
            "api_version": API_VERSION,
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": self.date_created,
            "date_updated": _now_rfc2822(),
            "date_sent": None,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {},
        }


class _Hangup(Exception):
    """The leg is over: its phone hung up, or a REST update ended it."""


class _Redirected(Exception):
    """A REST update gave the live leg new TwiML."""


class OutboundLeg:
    """One call the stand-in places: rings a phone, runs TwiML, bridges, reports status."""

    def __init__(
        self,
        twilio: TwilioStandIn,
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
        self.date_created = _now_rfc2822()
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
            "date_updated": _now_rfc2822(),
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
        self.start_time = _now_rfc2822()
        self._answered_at = time.monotonic()
        self._hangup_at = self._answered_at + self.phone.talk_seconds * self.twilio.time_scale
        self.heard.append(Heard("answer", self.to))
        self._callback("answered", "in-progress")

    def _end(self, status: str) -> None:
        with self._lock:
            self.status = status
            self.end_time = _now_rfc2822()
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
            "Timestamp": _now_rfc2822(),
        }
        if event == "completed":
            params["CallDuration"] = str(self.duration or 0)
        self._sequence += 1
        self.twilio.post(self.status_callback, params, kind="status")


class TwilioStandIn:
    """Twilio's REST API on 127.0.0.1: accounts' calls and messages, with phones to ring.

    `phones` sets each number's behaviour (`Phone`); other numbers behave as
    `default_phone`. `time_scale` multiplies every duration the phones and the TwiML
    state (1.0 = real seconds). The service is reached through `transport` (real HTTP by
    default), every request signed with `auth_token` as Twilio signs them.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        phones: dict[str, Phone] | None = None,
        default_phone: Phone | None = None,
        time_scale: float = 1.0,
        transport: Transport | None = None,
        port: int = 0,
    ):
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or new_sid("")
        self.phones: dict[str, Phone] = dict(phones or {})
        self.default_phone = default_phone or Phone()
        self.time_scale = time_scale
        self.transport = transport or HttpTransport()
        self.queues = QueueRegistry()
        self.calls: dict[str, OutboundLeg] = {}
        self.callers: dict[str, EmulatedCall] = {}
        self.messages: list[Message] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of REST requests
        self.callbacks: list[tuple[str, dict[str, str], int]] = []  # (url, params, status)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                self._answer(stand_in.handle("GET", self.path, self.headers, {}))

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(
                    self.rfile.read(length).decode(errors="replace"), keep_blank_values=True
                )
                self._answer(stand_in.handle("POST", self.path, self.headers, form))

            def _answer(self, answer: tuple[int, dict]) -> None:
                status, payload = answer
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep test output quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT: the service's IVR_TWILIO_API_URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop answering (legs still running end on their own; they are daemon threads)."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> TwilioStandIn:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # Configuration and inspection ----------------------------------------------------------

    def set_phone(self, number: str, phone: Phone | None = None, **behaviour) -> Phone:
        """Say how `number`'s phone behaves (a Phone, or its fields as keywords)."""
        phone = phone or Phone(**behaviour)
        self.phones[number] = phone
        return phone

    def phone_for(self, number: str) -> Phone:
        """The behaviour of the phone at `number`."""
        return self.phones.get(number, self.default_phone)

    def attach(self, call: EmulatedCall) -> None:
        """An inbound caller's leg: reachable by its CallSid (fetch, update)."""
        with self._lock:
            self.callers[call.result.call_sid] = call

    def register(self, leg: OutboundLeg) -> None:
        """A leg the stand-in placed."""
        with self._lock:
            self.calls[leg.sid] = leg

    def legs_to(self, number: str) -> list[OutboundLeg]:
        """Every leg placed to a number, oldest first."""
        with self._lock:
            return [leg for leg in self.calls.values() if leg.to == number]

    def wait_for_legs(self, timeout: float = 10.0) -> bool:
        """Wait until every leg placed so far has ended; True when they have."""
        deadline = time.monotonic() + timeout
        for leg in list(self.calls.values()):
            if not leg.finished.wait(max(0.0, deadline - time.monotonic())):
                return False
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return True

    def spawn(self, work) -> threading.Thread:
        """Run `work` on its own thread (a leg, a caller's flow going on, callbacks)."""
        thread = threading.Thread(target=work, daemon=True)
        with self._lock:
            self._threads = [item for item in self._threads if item.is_alive()] + [thread]
        thread.start()
        return thread

    def post(self, url: str, params: dict[str, str], kind: str = "webhook") -> tuple[int, str]:
        """A signed request to the service, as Twilio sends it (0: no HTTP answer)."""
        headers = {
            "X-Twilio-Signature": sign(self.auth_token, url, params),
            "I-Twilio-Idempotency-Token": new_sid(""),
            "User-Agent": "TwilioProxy/1.1",
        }
        try:
            status, body = self.transport.post(url, params, headers)
        except (OSError, ValueError) as error:
            status, body = 0, f"no answer: {error}"
        if kind == "status":
            with self._lock:
                self.callbacks.append((url, dict(params), status))
        return status, body

    # The REST API ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers, form: dict[str, list[str]]):
        """Answer one REST request: (HTTP status, JSON body)."""
        try:
            status, payload = self._route(method, path, headers, form)
        except Exception as error:  # a stand-in bug answers 500 like an outage would
            status, payload = _error(500, 20500, f"{type(error).__name__}: {error}")
        with self._lock:
            self.requests.append((method, path, status))
        return status, payload

    def _route(self, method: str, path: str, headers, form):
        if not self._authorised(headers.get("Authorization", "")):
            return _error(401, 20003, "Authenticate")
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != API_VERSION or parts[1] != "Accounts":
            return _error(404, 20404, f"The requested resource {path} was not found")
        if parts[2] != self.account_sid:
            return _error(404, 20404, f"The requested resource {path} was not found")
        resource = parts[3:]
        one = {name: values[-1] for name, values in form.items()}
        if method == "POST" and resource == ["Calls.json"]:
            return self._create_call(one, form.get("StatusCallbackEvent", []))
        if len(resource) == 2 and resource[0] == "Calls" and resource[1].endswith(".json"):
            sid = resource[1].removesuffix(".json")
            if method == "GET":
                return self._fetch_call(sid)
            if method == "POST":
                return self._update_call(sid, one)
        if method == "POST" and resource == ["Messages.json"]:
            return self._create_message(one)
        if method == "GET" and len(resource) == 2 and resource[0] == "Messages":
            sid = resource[1].removesuffix(".json")
            for message in self.messages:
                if message.sid == sid:
                    return 200, message.as_json(self.account_sid)
        return _error(404, 20404, f"The requested resource {path} was not found")

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account_sid and password == self.auth_token

    def _create_call(self, form: dict[str, str], events: list[str]):
        to, from_ = form.get("To", ""), form.get("From", "")
        url, twiml = form.get("Url"), form.get("Twiml")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _error(400, 21213, "No 'From' number is specified")
        if not url and not twiml:
            return _error(400, 21205, "Url parameter is required (or Twiml)")
        if url and not url.startswith(("http://", "https://")):
            return _error(400, 21205, f"Url is not a valid URL: {url}")
        timeout = form.get("Timeout", str(RING_TIMEOUT_DEFAULT))
        if not timeout.isdigit() or not 1 <= int(timeout) <= 600:
            return _error(400, 21216, f"Timeout must be 1 to 600 seconds, got {timeout!r}")
        asked = tuple(event for item in events for event in item.split())
        unknown = [event for event in asked if event not in CALL_EVENTS]
        if unknown:
            return _error(400, 21626, f"Invalid StatusCallbackEvent {unknown}")
        leg = OutboundLeg(
            self,
            to=to,
            # CallerId: the Calls resource's caller ID for SIP/Client calls; for numbers
            # the From is what the phone shows.
            from_=from_,
            url=url,
            twiml=twiml,
            status_callback=form.get("StatusCallback"),
            # "If no status_callback_event is specified, we will send the completed status."
            events=asked or ("completed",),
            ring_timeout=int(timeout),
        )
        self.register(leg)
        self.spawn(leg.run)
        return 201, leg.as_json()

    def _fetch_call(self, sid: str):
        if sid in self.calls:
            return 200, self.calls[sid].as_json()
        caller = self.callers.get(sid)
        if caller is None:
            return _error(404, 20404, f"The requested resource Calls/{sid}.json was not found")
        return 200, {
            "sid": sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "to": caller.to,
            "from": caller.from_,
            "status": caller.status,
            "direction": "inbound",
            "duration": str(caller.duration) if caller.duration is not None else None,
            "date_created": None,
            "api_version": API_VERSION,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json",
        }

    def _update_call(self, sid: str, form: dict[str, str]):
        url, twiml, status = form.get("Url"), form.get("Twiml"), form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            return _error(400, 20001, f"Status must be completed or canceled, got {status!r}")
        if url is not None and not url.startswith(("http://", "https://")):
            return _error(400, 21205, f"Url is not a valid URL: {url}")
        if sid in self.calls:
            problem = self.calls[sid].update(url, twiml, status)
            if problem:
                return _error(400, 21220, problem)
            return 200, self.calls[sid].as_json()
        caller = self.callers.get(sid)
        if caller is None:
            return _error(404, 20404, f"The requested resource Calls/{sid}.json was not found")
        if caller.result.ended:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        # The caller's call goes on by itself: the update is applied on its own thread,
        # so a webhook that makes this request is not waited on by the call it moves.
        if status is not None:
            self.spawn(caller.hang_up)
        elif url:
            self.spawn(lambda: caller.redirect(url))
        elif twiml:
            return _error(400, 20001, "the stand-in moves inbound callers with Url only")
        return self._fetch_call(sid)

    def _create_message(self, form: dict[str, str]):
        to, body = form.get("To", ""), form.get("Body", "")
        from_, service = form.get("From", ""), form.get("MessagingServiceSid")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if service and not service.startswith("MG"):
            return _error(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        message = Message(
            sid=new_sid("SM"),
            to=to,
            from_=from_,
            body=body,
            messaging_service_sid=service,
            status_callback=form.get("StatusCallback"),
            # The Message resource: "accepted" when a Messaging Service will pick a sender.
            status="accepted" if service and not from_ else "queued",
        )
        with self._lock:
            self.messages.append(message)
        answer = message.as_json(self.account_sid)
        self.spawn(lambda: self._deliver(message))
        return 201, answer

    def _deliver(self, message: Message) -> None:
        """The message goes out: sent, then delivered (or undelivered / failed)."""
        outcome = self.phone_for(message.to).message_status
        steps = ["failed"] if outcome == "failed" else ["sent", outcome]
        for status in steps:
            time.sleep(0.01 * self.time_scale)
            message.status = status
            if not message.status_callback:
                continue
            params = {
                "MessageSid": message.sid,
                "SmsSid": message.sid,
                "AccountSid": self.account_sid,
                "From": message.from_ or "",
                "To": message.to,
                "MessageStatus": status,
                "SmsStatus": status,
                "ApiVersion": API_VERSION,
            }
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
            if status in MESSAGE_ERRORS:
                params["ErrorCode"] = MESSAGE_ERRORS[status]
            message.callbacks.append(status)
            self.post(message.status_callback, params, kind="status")


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    """Twilio's error body."""
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
