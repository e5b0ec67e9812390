"""Plays Twilio's part: posts signed webhooks with Twilio's parameters and executes the TwiML.

Used by the tests and by developers to drive whole calls offline. A transport carries the
requests: real HTTP to a running server (`HttpTransport`), or a Flask test client.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any, Protocol

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"


class Transport(Protocol):
    """Sends one POST and returns (HTTP status, body)."""

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST a form to an absolute URL."""
        ...


class HttpTransport:
    """Real HTTP, as Twilio's servers would send it."""

    def __init__(self, timeout: float = 15.0):
        self.timeout = timeout

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST a form over HTTP and return (status, body)."""
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


class FlaskTransport:
    """A Flask test client, for fast tests without a server."""

    def __init__(self, client):
        self.client = client

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST through the test client (the URL's host is kept for the signature)."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = self.client.post(
            path,
            data=params,
            headers=headers,
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        return response.status_code, response.get_data(as_text=True)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for this request."""
    return RequestValidator(auth_token).compute_signature(url, params)


@dataclass
class Heard:
    """One thing the caller heard or did, in order."""

    kind: str  # "say", "keys", "silence", "dial", "enqueue", "queue_position", "hangup"
    text: str
    language: str = ""


@dataclass
class CallResult:
    """How the call went, from the caller's side."""

    call_sid: str
    heard: list[Heard] = field(default_factory=list)
    ended: bool = False
    connected_to: str | None = None
    queue: str | None = None
    statuses: list[int] = field(default_factory=list)

    @property
    def transcript(self) -> str:
        """Everything said to the caller, one line per <Say>."""
        return "\n".join(item.text for item in self.heard if item.kind == "say")


class EmulatedCall:
    """One inbound call, driven step by step like a caller on a phone."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        auth_token: str,
        to: str = "+78002345555",
        from_: str = "+79161234567",
        account_sid: str | None = None,
        call_sid: str | None = None,
        dial_status: str = "completed",
        queue_result: str = "bridged",
    ):
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.to, self.from_ = to, from_
        self.account_sid = account_sid or new_sid("AC")
        self.result = CallResult(call_sid or new_sid("CA"))
        self.dial_status, self.queue_result = dial_status, queue_result
        self._document_url = ""
        self._pending: list[ElementTree.Element] = []
        self._gather: ElementTree.Element | None = None
        self.last_status = 0
        self.last_body = ""

    # Requests --------------------------------------------------------------------------

    def base_params(self, status: str = "in-progress") -> dict[str, str]:
        """The parameters Twilio sends with every voice webhook."""
        return {
            "CallSid": self.result.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_,
            "To": self.to,
            "CallStatus": status,
            "ApiVersion": API_VERSION,
            "Direction": "inbound",
            "Caller": self.from_,
            "Called": self.to,
            "FromCountry": "RU",
            "ToCountry": "RU",
        }

    def post(self, url: str, extra: dict[str, str] | None = None, status: str = "in-progress"):
        """Post a signed webhook; returns (status, body)."""
        absolute = urllib.parse.urljoin(self.base_url + "/", url)
        params = {**self.base_params(status), **(extra or {})}
        headers = {
            "X-Twilio-Signature": sign(self.auth_token, absolute, params),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
        }
        status_code, body = self.transport.post(absolute, params, headers)
        self.result.statuses.append(status_code)
        self.last_status, self.last_body = status_code, body
        return status_code, body, absolute

    def _fetch(self, url: str, extra: dict[str, str] | None = None, status: str = "in-progress"):
        status_code, body, absolute = self.post(url, extra, status)
        if status_code != 200:
            # Twilio plays its application-error message and ends the call.
            self.result.heard.append(Heard("error", f"HTTP {status_code}"))
            self._finish()
            return
        self._document_url = absolute
        root = ElementTree.fromstring(body)
        self._pending = list(root)
        self._run()

    # The caller's actions ----------------------------------------------------------------

    def start(self) -> EmulatedCall:
        """Twilio answers: POST /twilio/voice."""
        self._fetch("/twilio/voice", status="ringing")
        return self

    def press(self, keys: str) -> EmulatedCall:
        """Type keys at the pending <Gather>, as Twilio collects them."""
        gather = self._require_gather()
        self.result.heard.append(Heard("keys", keys))
        finish = gather.get("finishOnKey", "#")
        digits, finished_on = keys, ""
        if finish and finish in keys:
            digits, finished_on = keys.split(finish, 1)[0], finish
        limit = gather.get("numDigits")
        if limit and limit.isdigit() and len(digits) >= int(limit):
            digits, finished_on = digits[: int(limit)], ""
        if not digits and not gather.get("actionOnEmptyResult") == "true":
            # Empty input: Twilio treats it like a time-out and runs the next verb.
            return self.silence()
        self._gather = None
        extra = {"Digits": digits, "msg": "Gather End"}
        if finished_on:
            extra["FinishedOnKey"] = finished_on
        self._fetch(gather.get("action") or self._document_url, extra)
        return self

    def silence(self) -> EmulatedCall:
        """Say nothing: the <Gather> times out and Twilio goes on with the next verb."""
        self._require_gather()
        self.result.heard.append(Heard("silence", ""))
        self._gather = None
        self._run()
        return self

    def hang_up(self) -> EmulatedCall:
        """The caller hangs up."""
        self._gather = None
        self._pending = []
        self._finish()
        return self

    @property
    def waiting_for_input(self) -> bool:
        """Whether a <Gather> is waiting for the caller."""
        return self._gather is not None

    def _require_gather(self) -> ElementTree.Element:
        if self._gather is None:
            raise RuntimeError("the IVR is not waiting for keys now")
        return self._gather

    # Executing TwiML ---------------------------------------------------------------------

    def _run(self) -> None:
        while self._pending and not self.result.ended:
            verb = self._pending.pop(0)
            if verb.tag == "Say":
                self.result.heard.append(Heard("say", verb.text or "", verb.get("language", "")))
            elif verb.tag == "Gather":
                for child in verb:
                    if child.tag == "Say":
                        self.result.heard.append(
                            Heard("say", child.text or "", child.get("language", ""))
                        )
                self._gather = verb
                return
            elif verb.tag == "Redirect":
                self._fetch(verb.text or self._document_url)
                return
            elif verb.tag == "Hangup":
                self._finish()
                return
            elif verb.tag == "Dial":
                self._dial(verb)
                return
            elif verb.tag == "Enqueue":
                self._enqueue(verb)
                return
        if not self._pending and self._gather is None and not self.result.ended:
            self._finish()  # end of document: Twilio hangs up

    def _dial(self, verb: ElementTree.Element) -> None:
        endpoint = next(iter(verb), None)
        target = (endpoint.text or "").strip() if endpoint is not None else (verb.text or "")
        if endpoint is not None and endpoint.tag == "Client":
            target = "client:" + target
        self.result.connected_to = target
        self.result.heard.append(Heard("dial", target))
        action = verb.get("action")
        if action:
            self._fetch(
                action,
                {
                    "DialCallStatus": self.dial_status,
                    "DialCallSid": new_sid("CA"),
                    "DialCallDuration": "42" if self.dial_status == "completed" else "0",
                },
            )
        elif not self.result.ended:
            self._run()

    def _enqueue(self, verb: ElementTree.Element) -> None:
        queue = (verb.text or "").strip()
        self.result.queue = queue
        self.result.heard.append(Heard("enqueue", queue))
        wait_url = verb.get("waitUrl")
        if wait_url:
            _, body, _ = self.post(
                urllib.parse.urljoin(self._document_url, wait_url),
                {
                    "QueuePosition": "1",
                    "QueueSid": new_sid("QU"),
                    "QueueTime": "0",
                    "AvgQueueTime": "0",
                    "CurrentQueueSize": "1",
                    "MaxQueueSize": "100",
                },
            )
            if self.last_status == 200:
                for say in ElementTree.fromstring(body).iter("Say"):
                    self.result.heard.append(Heard("queue_position", say.text or ""))
        action = verb.get("action")
        if action:
            self._fetch(
                action,
                {"QueueResult": self.queue_result, "QueueSid": new_sid("QU"), "QueueTime": "30"},
            )
        else:
            self._finish()

    def _finish(self) -> None:
        if self.result.ended:
            return
        self.result.ended = True
        self.result.heard.append(Heard("hangup", ""))
        self.post(
            "/twilio/status",
            {"CallDuration": "60", "SequenceNumber": "0", "CallbackSource": "call-progress-events"},
            status="completed",
        )


def as_dict(result: CallResult) -> dict[str, Any]:
    """A JSON-ready summary of a call."""
    return {
        "call_sid": result.call_sid,
        "ended": result.ended,
        "connected_to": result.connected_to,
        "queue": result.queue,
        "heard": [item.__dict__ for item in result.heard],
    }
