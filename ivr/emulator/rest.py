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

This module is the HTTP resource layer (`TwilioStandIn`: the endpoints, auth, error
bodies, messages); the legs are in `legs`, the phones in `phones`, the queues in
`queue_registry`, and their names are importable from here as before.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ivr.emulator.caller import EmulatedCall
from ivr.emulator.http import API_VERSION, HttpTransport, Transport, new_sid, sign
from ivr.emulator.legs import (
    DIAL_TIMEOUT_DEFAULT,
    DONE,
    GATHER_TIMEOUT_DEFAULT,
    RING_TIMEOUT_DEFAULT,
    OutboundLeg,
    now_rfc2822,
)
from ivr.emulator.phones import MESSAGE_OUTCOMES, PHONE_KEYS, Phone, phone_from
from ivr.emulator.queue_registry import QueueRegistry

# Names that lived here before the split, still importable from ivr.emulator.rest.
__all__ = [
    "CALL_EVENTS",
    "DIAL_TIMEOUT_DEFAULT",
    "DONE",
    "GATHER_TIMEOUT_DEFAULT",
    "MESSAGE_ERRORS",
    "MESSAGE_OUTCOMES",
    "PHONE_KEYS",
    "RING_TIMEOUT_DEFAULT",
    "Message",
    "OutboundLeg",
    "Phone",
    "QueueRegistry",
    "TwilioStandIn",
    "phone_from",
]

CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
# Error codes in the Message status callback (Twilio's error dictionary): 30003
# "Unreachable destination handset", 30008 "Unknown error".
MESSAGE_ERRORS = {"undelivered": "30003", "failed": "30008"}


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
    date_created: str = field(default_factory=now_rfc2822)
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
            "date_updated": now_rfc2822(),
            "date_sent": None,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {},
        }


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
