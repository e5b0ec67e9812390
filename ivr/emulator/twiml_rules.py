"""What TwiML Twilio accepts: verbs, nouns, nesting, attributes and their values, in one table.

Written from Twilio's TwiML reference (each entry names its page under
https://www.twilio.com/docs/voice/twiml/) and checked against Twilio's published 2010 schema
for the verbs it covers. The emulator runs every document it is given through `check`; so
do the tests, for every TwiML document the service answers with (tests/conftest.py). A
document Twilio would refuse (error 12100 "document parse failure" or 12200 "schema
validation") is refused here too, instead of being played kindly.
"""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

Check = Callable[[str], bool]


def _one_of(*values: str) -> Check:
    return lambda text: text in values


def _whole(low: int, high: int) -> Check:
    return lambda text: text.isascii() and text.isdigit() and low <= int(text) <= high


def _url(text: str) -> bool:
    """A relative or absolute URL (Twilio resolves relative ones against the document's)."""
    return bool(text) and not any(char.isspace() for char in text) and len(text) <= 4096


_LOOPBACK_WS: ContextVar[bool] = ContextVar("loopback_ws", default=False)


def _wss_url(text: str) -> bool:
    """Media Streams only connect to secure WebSockets (<Stream url> must be wss://).

    The emulator's explicit loopback switch (`check(..., loopback_ws=True)`, off by
    default) also accepts ws:// to 127.0.0.1 / localhost: loopback runs have no TLS.
    """
    if _LOOPBACK_WS.get() and _url(text):
        parts = urllib.parse.urlsplit(text)
        if parts.scheme == "ws" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
            return True
    return text.startswith("wss://") and _url(text)


def _keys(allowed: str, empty_ok: bool = False) -> Check:
    return lambda text: (empty_ok or bool(text)) and all(char in allowed for char in text)


def _events(*values: str) -> Check:
    return lambda text: bool(text.split()) and all(part in values for part in text.split())


def _true_false(text: str) -> bool:
    return text in ("true", "false")


_METHOD = _one_of("GET", "POST")
_DTMF = "0123456789*#"
# Say: the voices Twilio documents; Polly.* and Google.* name Amazon's and Google's voices.
_VOICE = re.compile(
    r"^(man|woman|alice|Polly\.[A-Za-z]+(-Neural|-Generative)?|Google\.[A-Za-z0-9-]+)$"
)
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}-[A-Z]{2}$")


@dataclass(frozen=True)
class Element:
    """What one element may carry: attributes with their checks, children, and text."""

    page: str  # Twilio's reference page, under /docs/voice/twiml/
    attributes: dict[str, Check] = field(default_factory=dict)
    children: tuple[str, ...] = ()
    text: str = "none"  # "none", "optional" or "required"
    text_check: Check | None = None


_STATUS_CALLBACK = {
    "statusCallback": _url,
    "statusCallbackMethod": _METHOD,
    "statusCallbackEvent": _events("initiated", "ringing", "answered", "completed"),
}

# The verbs (children of <Response>) and the nouns nested in them.
ELEMENTS: dict[str, Element] = {
    "Response": Element(
        "twiml",
        children=(
            "Say",
            "Play",
            "Pause",
            "Gather",
            "Record",
            "Redirect",
            "Dial",
            "Enqueue",
            "Leave",
            "Hangup",
            "Reject",
            "Start",
            "Stop",
            "Connect",
        ),
    ),
    "Say": Element(
        "say",
        {
            "voice": lambda text: bool(_VOICE.match(text)),
            "language": lambda text: bool(_LANGUAGE_TAG.match(text)),
            "loop": _whole(0, 1000),
        },
        text="required",
    ),
    "Play": Element(
        "play", {"loop": _whole(0, 1000), "digits": _keys(_DTMF + "w")}, text="optional"
    ),
    "Pause": Element("pause", {"length": _whole(1, 600)}),
    "Gather": Element(
        "gather",
        {
            "action": _url,
            "method": _METHOD,
            "input": _one_of("dtmf", "speech", "dtmf speech", "speech dtmf"),
            "timeout": _whole(1, 600),
            "finishOnKey": _keys(_DTMF, empty_ok=True),
            "numDigits": _whole(1, 1000),
            "actionOnEmptyResult": _true_false,
            "partialResultCallback": _url,
            "partialResultCallbackMethod": _METHOD,
            "language": lambda text: bool(_LANGUAGE_TAG.match(text)),
            "hints": lambda text: len(text) <= 10000,
            "speechTimeout": lambda text: text == "auto" or _whole(1, 600)(text),
            "speechModel": lambda text: bool(text),
            "profanityFilter": _true_false,
            "enhanced": _true_false,
            "bargeIn": _true_false,
            "debug": _true_false,
            "maxSpeechTime": _whole(1, 600),
        },
        children=("Say", "Play", "Pause"),
    ),
    "Record": Element(
        "record",
        {
            "action": _url,
            "method": _METHOD,
            "timeout": _whole(0, 600),
            "finishOnKey": _keys(_DTMF, empty_ok=True),
            "maxLength": _whole(1, 14400),
            "playBeep": _true_false,
            "trim": _one_of("trim-silence", "do-not-trim"),
            "recordingStatusCallback": _url,
            "recordingStatusCallbackMethod": _METHOD,
            "recordingStatusCallbackEvent": _events("in-progress", "completed", "absent"),
            "transcribe": _true_false,
            "transcribeCallback": _url,
        },
    ),
    "Redirect": Element("redirect", {"method": _METHOD}, text="required", text_check=_url),
    "Dial": Element(
        "dial",
        {
            "action": _url,
            "method": _METHOD,
            "timeout": _whole(5, 600),
            "hangupOnStar": _true_false,
            "timeLimit": _whole(1, 14400),
            "callerId": lambda text: bool(text) and len(text) <= 256,
            "record": _one_of(
                "do-not-record",
                "record-from-answer",
                "record-from-ringing",
                "record-from-answer-dual",
                "record-from-ringing-dual",
            ),
            "trim": _one_of("trim-silence", "do-not-trim"),
            "recordingStatusCallback": _url,
            "recordingStatusCallbackMethod": _METHOD,
            "recordingStatusCallbackEvent": _events("in-progress", "completed", "absent"),
            "answerOnBridge": _true_false,
            "ringTone": lambda text: bool(re.match(r"^[a-z]{2}$", text)),
            "sequential": _true_false,
        },
        children=("Number", "Client", "Sip", "Queue", "Conference"),
        text="optional",  # a phone number may be the Dial's text
    ),
    "Number": Element(
        "number",
        {"sendDigits": _keys(_DTMF + "w"), "url": _url, "method": _METHOD, **_STATUS_CALLBACK},
        text="required",
        text_check=lambda text: bool(re.match(r"^\+?[0-9]{3,16}$", text)),
    ),
    "Client": Element(
        "client",
        {"url": _url, "method": _METHOD, **_STATUS_CALLBACK},
        children=("Identity", "Parameter"),
        text="optional",
    ),
    "Identity": Element("client", text="required"),
    "Sip": Element(
        "sip",
        {
            "username": lambda text: bool(text),
            "password": lambda text: bool(text),
            "url": _url,
            "method": _METHOD,
            **_STATUS_CALLBACK,
        },
        text="required",
        text_check=lambda text: text.startswith(("sip:", "sips:")),
    ),
    "Queue": Element(
        "queue",
        {"url": _url, "method": _METHOD, "reservationSid": bool, "postWorkActivitySid": bool},
        text="required",
        text_check=lambda text: 0 < len(text) <= 64,
    ),
    "Conference": Element("conference", {}, text="required"),
    "Enqueue": Element(
        "enqueue",
        {
            "action": _url,
            "method": _METHOD,
            "waitUrl": _url,
            "waitUrlMethod": _METHOD,
            "workflowSid": bool,
        },
        text="optional",  # the queue's name, 64 characters at most
        text_check=lambda text: len(text) <= 64,
    ),
    "Leave": Element("leave"),
    "Hangup": Element("hangup"),
    "Reject": Element("reject", {"reason": _one_of("rejected", "busy")}),
    # <Start><Stream> forks the call's audio to a WebSocket while the call goes on.
    "Start": Element("start", {"action": _url, "method": _METHOD}, children=("Stream",)),
    "Stop": Element("stream", children=("Stream",)),
    # <Connect><Stream> hands the call's audio to a WebSocket; the action runs when it ends.
    "Connect": Element("connect", {"action": _url, "method": _METHOD}, children=("Stream",)),
    "Stream": Element(
        "stream",
        {
            "url": _wss_url,
            "name": lambda text: 0 < len(text) <= 64,
            "track": _one_of("inbound_track", "outbound_track", "both_tracks"),
            "statusCallback": _url,
            "statusCallbackMethod": _METHOD,
        },
        children=("Parameter",),
    ),
    "Parameter": Element(
        "stream",
        {"name": lambda text: bool(text), "value": lambda text: len(text) <= 500},
    ),
}

# Verbs allowed in the TwiML a queue's waitUrl answers with (the <Enqueue> page).
WAIT_URL_VERBS = ("Play", "Say", "Pause", "Hangup", "Redirect", "Leave", "Gather")
# Verbs allowed in the TwiML of <Dial><Queue url> and <Number url> (the <Queue> page).
WHISPER_VERBS = ("Play", "Say", "Pause", "Redirect")
REQUIRED_ATTRIBUTES = {"Stream": ("url",), "Parameter": ("name", "value")}
# Verbs after which nothing in the document runs (the <Record>, <Redirect>, <Hangup> pages).
ENDING_VERBS = ("Redirect", "Hangup", "Reject")


class TwimlRefused(ValueError):
    """A document Twilio would refuse, with Twilio's error code."""

    def __init__(self, code: int, problem: str):
        super().__init__(f"Twilio error {code}: {problem}")
        self.code = code
        self.problem = problem


def parse(body: str) -> ElementTree.Element:
    """Parse a TwiML document (from the service under test: our own server, not the internet)."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError as error:
        raise TwimlRefused(12100, f"document parse failure: {error}") from None
    return root


def check(
    body: str, allowed_verbs: tuple[str, ...] | None = None, loopback_ws: bool = False
) -> ElementTree.Element:
    """Parse and check a document; TwimlRefused if Twilio would refuse it.

    `allowed_verbs` narrows the verbs for documents that are not a call's own (a queue's
    waitUrl, a whisper); `loopback_ws` accepts <Stream url="ws://127.0.0.1..."> (see
    `_wss_url`).
    """
    token = _LOOPBACK_WS.set(loopback_ws)
    try:
        return _check(body, allowed_verbs)
    finally:
        _LOOPBACK_WS.reset(token)


def _check(body: str, allowed_verbs: tuple[str, ...] | None) -> ElementTree.Element:
    root = parse(body)
    if root.tag != "Response":
        raise TwimlRefused(12100, f"the root element is <{root.tag}>, not <Response>")
    if root.attrib:
        raise TwimlRefused(12200, f"<Response> takes no attributes, got {sorted(root.attrib)}")
    if (root.text or "").strip():
        raise TwimlRefused(12200, "<Response> has text outside any verb")
    for verb in root:
        if allowed_verbs is not None and verb.tag not in allowed_verbs:
            raise TwimlRefused(12200, f"<{verb.tag}> is not allowed here ({allowed_verbs})")
    _check_element(root, "Response")
    return root


def _check_element(element: ElementTree.Element, path: str) -> None:
    rule = ELEMENTS.get(element.tag)
    if rule is None:
        raise TwimlRefused(12200, f"unknown element <{element.tag}> at {path}")
    for name, value in element.attrib.items():
        valid = rule.attributes.get(name)
        if valid is None:
            raise TwimlRefused(12200, f"<{element.tag}> has no attribute {name!r} ({path})")
        if not valid(value):
            raise TwimlRefused(12200, f"<{element.tag} {name}={value!r}> is not valid ({path})")
    for name in REQUIRED_ATTRIBUTES.get(element.tag, ()):
        if name not in element.attrib:
            raise TwimlRefused(12200, f"<{element.tag}> needs the attribute {name!r} ({path})")
    text = (element.text or "").strip()
    if rule.text == "none" and text:
        raise TwimlRefused(12200, f"<{element.tag}> takes no text ({path})")
    if rule.text == "required" and not text:
        raise TwimlRefused(12200, f"<{element.tag}> needs text ({path})")
    if text and rule.text_check is not None and not rule.text_check(text):
        raise TwimlRefused(12200, f"<{element.tag}>{text}</{element.tag}> is not valid ({path})")
    for child in element:
        if child.tag not in rule.children:
            raise TwimlRefused(12200, f"<{child.tag}> cannot be nested in <{element.tag}> ({path})")
        if (child.tail or "").strip():
            raise TwimlRefused(12200, f"text between verbs in <{element.tag}> ({path})")
        _check_element(child, f"{path}/{child.tag}")
    if element.tag == "Dial" and text and len(element):
        raise TwimlRefused(12200, f"<Dial> has both a number and nouns ({path})")
    if element.tag == "Dial" and not text and not len(element):
        raise TwimlRefused(12200, f"<Dial> names nobody to dial ({path})")
