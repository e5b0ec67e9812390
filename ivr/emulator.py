"""Plays Twilio's part: posts signed webhooks with Twilio's parameters and executes the TwiML.

Used by the tests, `ivr call` and `ivr simulate` to drive whole calls offline. A transport
carries the requests: real HTTP to a running server (`HttpTransport`) or a Flask test client.
Recordings are served over real HTTP on loopback by `MediaServer`, as Twilio's media host
serves them.
"""

from __future__ import annotations

import base64
import http.client
import random
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
FALLBACK_PATH = "/twilio/fallback"
MAX_REQUESTS_PER_CALL = 300
FINISH_ON_KEY_DEFAULT = "#"
RECORD_FINISH_DEFAULT = "1234567890*#"


class Transport(Protocol):
    """Sends one POST and returns (HTTP status, body)."""

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST a form to an absolute URL."""
        ...


class HttpTransport:
    """Real HTTP, as Twilio's servers send it."""

    def __init__(self, timeout: float = 15.0):
        self.timeout = timeout

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST a form over HTTP and return (status, body)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url}")
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
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
            path, data=params, headers=headers, base_url=f"{parts.scheme}://{parts.netloc}"
        )
        return response.status_code, response.get_data(as_text=True)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for this request."""
    return RequestValidator(auth_token).compute_signature(url, params)


def parse_twiml(body: str) -> ElementTree.Element:
    """Parse a TwiML document from the service under test (our own server, not the internet)."""
    return ElementTree.fromstring(body)  # noqa: S314


# Recordings ------------------------------------------------------------------------------


@dataclass
class Recording:
    """One recording as Twilio's media host holds it."""

    sid: str
    account_sid: str
    data: bytes
    content_type: str
    duration: int
    not_ready_fetches: int = 0
    fetches: int = 0


class MediaServer:
    """Serves recordings over HTTP on loopback like api.twilio.com's Recordings resource.

    `RecordingUrl` (no extension) and `RecordingUrl.wav` return the WAV, `.mp3` an MP3
    (transcoded with ffmpeg). A recording can answer 404 for its first N fetches, as
    Twilio does while a recording is still being processed. With credentials set, the
    host wants HTTP basic auth (AccountSid:AuthToken), as with Twilio's "HTTP auth for
    media" setting. A DELETE of `RecordingUrl.json` removes the recording (204), as
    Twilio's Recording resource does.
    """

    def __init__(self, credentials: tuple[str, str] | None = None):
        self.recordings: dict[str, Recording] = {}
        self.requests: list[tuple[str, int]] = []
        self.credentials = credentials
        self._lock = threading.Lock()
        media = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                status, body, content_type = media.fetch(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_DELETE(self):  # noqa: N802 - http.server's naming
                status = media.delete(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep test output quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(
        self, account_sid: str, path: Path, not_ready_fetches: int = 0
    ) -> tuple[str, Recording]:
        """Host an audio file as a new recording; returns (RecordingUrl, recording)."""
        data = path.read_bytes()
        sid = new_sid("RE")
        recording = Recording(
            sid=sid,
            account_sid=account_sid,
            data=data,
            content_type="audio/mpeg" if path.suffix.lower() == ".mp3" else "audio/x-wav",
            duration=audio_duration(path),
            not_ready_fetches=not_ready_fetches,
        )
        with self._lock:
            self.recordings[sid] = recording
        return f"{self.base_url}/{API_VERSION}/Accounts/{account_sid}/Recordings/{sid}", recording

    def fetch(self, path: str, headers) -> tuple[int, bytes, str]:
        """Answer one GET for a recording."""
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        sid, extension = (parts[-1].split(".", 1) + [""])[:2] if parts else ("", "")
        with self._lock:
            recording = self.recordings.get(sid)
            self.requests.append((path, 0))
            if recording is None or parts[:2] != [API_VERSION, "Accounts"]:
                return 404, b'{"status": 404, "message": "not found"}', "application/json"
            if self.credentials and not self._authorised(headers):
                return 401, b'{"status": 401, "message": "auth required"}', "application/json"
            recording.fetches += 1
            if recording.fetches <= recording.not_ready_fetches:
                return 404, b'{"status": 404, "message": "not ready"}', "application/json"
        if extension in ("", "wav"):
            if recording.content_type == "audio/x-wav":
                return 200, recording.data, "audio/x-wav"
            return 200, transcode(recording.data, "wav"), "audio/x-wav"
        if extension == "mp3":
            if recording.content_type == "audio/mpeg":
                return 200, recording.data, "audio/mpeg"
            return 200, transcode(recording.data, "mp3"), "audio/mpeg"
        return 404, b'{"status": 404}', "application/json"

    def delete(self, path: str, headers) -> int:
        """Answer one DELETE of a Recording resource (`.../Recordings/RE....json`), as Twilio."""
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        sid, extension = (parts[-1].split(".", 1) + [""])[:2]
        with self._lock:
            self.requests.append((path, 0))
            recording = self.recordings.get(sid)
            if (
                recording is None
                or extension != "json"
                or parts[:-1] != [API_VERSION, "Accounts", recording.account_sid, "Recordings"]
            ):
                return 404
            if self.credentials and not self._authorised(headers):
                return 401
            del self.recordings[sid]
        return 204

    def _authorised(self, headers) -> bool:
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return secrets.compare_digest(headers.get("Authorization", ""), expected)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def audio_duration(path: Path) -> int:
    """Whole seconds of audio (WAV from its header; anything else via ffprobe)."""
    try:
        with wave.open(str(path), "rb") as audio:
            return max(1, round(audio.getnframes() / audio.getframerate()))
    except (wave.Error, EOFError, ZeroDivisionError):
        pass
    try:
        output = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
        return max(1, round(float(output)))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 1


def transcode(data: bytes, target: str) -> bytes:
    """Convert audio bytes to WAV or MP3 with ffmpeg (as Twilio serves either)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", target, "pipe:1"],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.stdout


# The call --------------------------------------------------------------------------------


@dataclass
class Heard:
    """One thing that happened on the call, in order, from the caller's side."""

    kind: str  # say, play, keys, silence, speak, record, dial, enqueue, queue, hangup, error
    text: str
    language: str = ""


@dataclass
class CallResult:
    """How the call went."""

    call_sid: str
    heard: list[Heard] = field(default_factory=list)
    ended: bool = False
    connected_to: str | None = None
    queue: str | None = None
    statuses: list[int] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)

    @property
    def transcript(self) -> str:
        """Everything said to the caller, one line per <Say>."""
        return "\n".join(item.text for item in self.heard if item.kind == "say")

    @property
    def end(self) -> str:
        """Where the call ended: connected, queued, hung_up (by the IVR or the caller), live."""
        if not self.ended:
            return "connected" if self.connected_to else "live"
        if self.errors:
            return "error"
        if self.connected_to and not self.queue:
            return "connected"
        if self.queue:
            return "queued"
        return "hung_up"


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
        at: str | None = None,
        media: MediaServer | None = None,
        recording_not_ready_fetches: int = 0,
        recording_callback_delay: float = 0.05,
        deliveries: int = 1,
        time_scale: float = 1.0,
        think_time: float = 0.0,
        fallback_on_failure: bool = False,
        fallback_tries: int = 1,
        fallback_retry_delay: float = 0.5,
    ):
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.to, self.from_ = to, from_
        self.account_sid = account_sid or new_sid("AC")
        self.result = CallResult(call_sid or new_sid("CA"))
        self.dial_status, self.queue_result = dial_status, queue_result
        self.at = at
        self.media = media
        self.recording_not_ready_fetches = recording_not_ready_fetches
        self.recording_callback_delay = recording_callback_delay
        self.deliveries = deliveries
        self.time_scale = time_scale
        # Load runs: the caller takes about this long (random, ±50%) before each answer, as
        # prompts take seconds to say, and the call arrives within that much of its start.
        self.think_time = think_time
        # As Twilio: a call-flow request with no usable answer (connection refused or reset,
        # time-out, 5xx) makes Twilio POST the number's fallback URL with ErrorCode and
        # ErrorUrl and run that TwiML. Twilio tries the fallback once; more `fallback_tries`
        # are a test harness's way of waiting for a server that is restarting.
        self.fallback_on_failure = fallback_on_failure
        self.fallback_tries = fallback_tries
        self.fallback_retry_delay = fallback_retry_delay
        self._document_url = ""
        self._pending: list[ElementTree.Element] = []
        self._waiting: ElementTree.Element | None = None  # a <Gather> or <Record>
        self._dialling: ElementTree.Element | None = None  # a <Dial> the caller is on
        self._started = time.monotonic()
        self._callbacks: list[threading.Thread] = []
        self.last_status = 0
        self.last_body = ""

    # Requests ----------------------------------------------------------------------------

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

    def post(
        self, url: str, extra: dict[str, str] | None = None, status: str = "in-progress"
    ) -> tuple[int, str, str]:
        """Post a signed webhook (repeated `deliveries` times, as Twilio's retries would)."""
        if len(self.result.statuses) >= MAX_REQUESTS_PER_CALL:
            raise RuntimeError(f"more than {MAX_REQUESTS_PER_CALL} requests: a redirect loop?")
        absolute = urllib.parse.urljoin((self._document_url or self.base_url + "/"), url)
        params = {**self.base_params(status), **(extra or {})}
        headers = {
            "X-Twilio-Signature": sign(self.auth_token, absolute, params),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
        }
        answers = []
        for _ in range(self.deliveries):
            started = time.perf_counter()
            try:
                answers.append(self.transport.post(absolute, params, headers))
            except (OSError, http.client.HTTPException) as error:
                if not self.fallback_on_failure:
                    raise
                answers.append((0, f"no answer: {type(error).__name__}: {error}"))  # 0: no HTTP
            path = urllib.parse.urlsplit(absolute).path
            self.result.latencies.append((path, time.perf_counter() - started))
        status_code, body = answers[0]
        if any(answer != answers[0] for answer in answers[1:]):
            self.result.errors.append(f"duplicate deliveries of {absolute} got different answers")
        self.result.statuses.append(status_code)
        self.last_status, self.last_body = status_code, body
        return status_code, body, absolute

    def _fetch(self, url: str, extra: dict[str, str] | None = None, status: str = "in-progress"):
        status_code, body, absolute = self.post(url, extra, status)
        if (
            self.fallback_on_failure
            and _no_usable_answer(status_code)
            and urllib.parse.urlsplit(absolute).path != FALLBACK_PATH
        ):
            status_code, body, absolute = self._post_fallback("11200", absolute)
        if status_code != 200:
            # Twilio says "an application error has occurred" and ends the call.
            self.result.errors.append(f"HTTP {status_code} from {absolute}")
            self.result.heard.append(Heard("error", f"HTTP {status_code}"))
            self._finish()
            return
        self._document_url = absolute
        try:
            root = parse_twiml(body)
        except ElementTree.ParseError as error:
            self.result.errors.append(f"invalid TwiML from {absolute}: {error}")
            self._finish()
            return
        self._pending = list(root)
        self._run()

    # The caller's actions ----------------------------------------------------------------

    def start(self) -> EmulatedCall:
        """Twilio answers: POST /twilio/voice (at the scenario's instant, if one is set)."""
        if self.think_time > 0:
            time.sleep(random.uniform(0, self.think_time))  # calls do not all ring at once
        url = self.base_url + "/twilio/voice"
        if self.at:
            url += "?" + urllib.parse.urlencode({"simulated_now": self.at})
        self._fetch(url, status="ringing")
        return self

    @property
    def waiting_for(self) -> str | None:
        """'Gather' or 'Record' when the IVR waits for the caller, else None."""
        return self._waiting.tag if self._waiting is not None else None

    def press(self, keys: str) -> EmulatedCall:
        """Type keys at the pending <Gather> (or end a <Record> with a key)."""
        verb = self._require_waiting()
        self._listen()
        self.result.heard.append(Heard("keys", keys))
        if verb.tag == "Record":
            return self._record_ended_by_key(verb, keys)
        finish = verb.get("finishOnKey", FINISH_ON_KEY_DEFAULT)
        digits, finished_on = keys, ""
        if finish and finish in keys:
            digits, finished_on = keys.split(finish, 1)[0], finish
        limit = verb.get("numDigits")
        if limit and limit.isdigit() and len(digits) >= int(limit):
            digits, finished_on = digits[: int(limit)], ""
        if not digits and verb.get("actionOnEmptyResult") != "true":
            # Nothing typed: Twilio treats it as a time-out and runs the next verb.
            self._waiting = None
            self._run()
            return self
        self._waiting = None
        extra = {"Digits": digits, "msg": "Gather End"}
        if finished_on:
            extra["FinishedOnKey"] = finished_on
        self._fetch(verb.get("action") or self._document_url, extra)
        return self

    def silence(self) -> EmulatedCall:
        """Say and type nothing: the <Gather> times out / the <Record> is empty."""
        verb = self._require_waiting()
        self._listen()
        self.result.heard.append(Heard("silence", ""))
        self._waiting = None
        if verb.tag == "Record":
            self._recording_status_callback(verb, None, "absent")
        self._run()
        return self

    def speak(self, audio: str | Path) -> EmulatedCall:
        """Speak: at a <Record>, the audio file becomes the recording; a DTMF <Gather>
        does not listen to speech, so there it is a time-out."""
        verb = self._require_waiting()
        self._listen()
        self.result.heard.append(Heard("speak", str(audio)))
        if verb.tag != "Record" or "speech" in verb.get("input", ""):
            self._waiting = None
            self._run()
            return self
        if self.media is None:
            raise RuntimeError("speaking into a <Record> needs a MediaServer for the recordings")
        url, recording = self.media.add(
            self.account_sid, Path(audio), self.recording_not_ready_fetches
        )
        self.result.recordings.append(url)
        self._waiting = None
        self._recording_status_callback(verb, (url, recording), "completed")
        self._fetch(
            verb.get("action") or self._document_url,
            {
                "RecordingUrl": url,
                "RecordingSid": recording.sid,
                "RecordingDuration": str(recording.duration),
            },
        )
        return self

    def hang_up(self) -> EmulatedCall:
        """The caller hangs up (also ends a connected <Dial>)."""
        self._waiting = None
        self._pending = []
        if self._dialling is not None:
            verb, self._dialling = self._dialling, None
            self.result.heard.append(Heard("keys", "hangup"))
            if verb.get("action"):
                self.post(verb.get("action"), self._dial_params("completed"))
        self._finish()
        return self

    def fallback(self, error_code: str = "11200") -> EmulatedCall:
        """Twilio could not use the last answer and calls the number's fallback URL."""
        self._waiting = None
        self._fetch(
            self.base_url + FALLBACK_PATH,
            {"ErrorCode": error_code, "ErrorUrl": self._document_url},
        )
        return self

    def _post_fallback(self, error_code: str, failed_url: str) -> tuple[int, str, str]:
        """POST the fallback URL after `failed_url` gave no usable answer (see __init__)."""
        self.result.heard.append(Heard("fallback", f"{error_code} {failed_url}"))
        extra = {"ErrorCode": error_code, "ErrorUrl": failed_url}
        for attempt in range(max(1, self.fallback_tries)):
            if attempt:
                time.sleep(self.fallback_retry_delay)
            answer = self.post(self.base_url + FALLBACK_PATH, extra)
            if not _no_usable_answer(answer[0]):
                break
        return answer

    def wait_for_callbacks(self, timeout: float = 10.0) -> None:
        """Let background callbacks (recording status) finish."""
        for thread in self._callbacks:
            thread.join(timeout)

    def _listen(self) -> None:
        if self.think_time > 0:
            time.sleep(self.think_time * random.uniform(0.5, 1.5))

    def _require_waiting(self) -> ElementTree.Element:
        if self._waiting is None:
            raise RuntimeError("the IVR is not waiting for the caller now")
        return self._waiting

    # Executing TwiML ---------------------------------------------------------------------

    def _run(self) -> None:
        while self._pending and not self.result.ended:
            verb = self._pending.pop(0)
            if verb.tag == "Say":
                self._say(verb)
            elif verb.tag == "Play":
                self.result.heard.append(Heard("play", (verb.text or "").strip()))
            elif verb.tag == "Pause":
                # The caller waits: a poll loop must give background work real time.
                time.sleep(float(verb.get("length", "1")) * self.time_scale)
            elif verb.tag in ("Gather", "Record"):
                for child in verb:
                    if child.tag == "Say":
                        self._say(child)
                    elif child.tag == "Play":
                        self.result.heard.append(Heard("play", (child.text or "").strip()))
                if verb.tag == "Record":
                    self.result.heard.append(Heard("record", verb.get("maxLength", "3600")))
                self._waiting = verb
                return
            elif verb.tag == "Redirect":
                self._fetch((verb.text or "").strip() or self._document_url)
                return
            elif verb.tag in ("Hangup", "Reject"):
                self._finish()
                return
            elif verb.tag == "Dial":
                self._dial(verb)
                return
            elif verb.tag == "Enqueue":
                self._enqueue(verb)
                return
            else:
                self.result.errors.append(f"unsupported TwiML verb <{verb.tag}>")
        if not self._pending and self._waiting is None and not self.result.ended:
            if self._dialling is None:
                self._finish()  # end of document: Twilio hangs up

    def _say(self, verb: ElementTree.Element) -> None:
        self.result.heard.append(Heard("say", (verb.text or "").strip(), verb.get("language", "")))

    def _dial_params(self, status: str) -> dict[str, str]:
        return {
            "DialCallStatus": status,
            "DialCallSid": new_sid("CA"),
            "DialCallDuration": "42" if status == "completed" else "0",
        }

    def _dial(self, verb: ElementTree.Element) -> None:
        endpoint = next(iter(verb), None)
        target = (
            (endpoint.text or "").strip() if endpoint is not None else (verb.text or "").strip()
        )
        if endpoint is not None and endpoint.tag == "Client":
            target = "client:" + target
        self.result.connected_to = target
        self.result.heard.append(Heard("dial", target))
        if self.dial_status == "in-progress":
            self._dialling = verb  # the caller talks to the operator until hang_up()
            return
        if verb.get("action"):
            self._fetch(verb.get("action"), self._dial_params(self.dial_status))
        else:
            self._run()

    def _enqueue(self, verb: ElementTree.Element) -> None:
        queue = (verb.text or "").strip()
        self.result.queue = queue
        self.result.heard.append(Heard("enqueue", queue))
        wait_url = verb.get("waitUrl")
        if wait_url:
            status_code, body, _ = self.post(
                wait_url,
                {
                    "QueuePosition": "1",
                    "QueueSid": new_sid("QU"),
                    "QueueTime": "0",
                    "AvgQueueTime": "0",
                    "CurrentQueueSize": "1",
                    "MaxQueueSize": "100",
                },
            )
            if status_code == 200:
                for say in parse_twiml(body).iter("Say"):
                    self.result.heard.append(Heard("queue", (say.text or "").strip()))
            else:
                self.result.errors.append(f"HTTP {status_code} from the queue wait URL")
        if verb.get("action"):
            self._fetch(
                verb.get("action"),
                {"QueueResult": self.queue_result, "QueueSid": new_sid("QU"), "QueueTime": "30"},
            )
        else:
            self._finish()

    def _record_ended_by_key(self, verb: ElementTree.Element, keys: str) -> EmulatedCall:
        # A key before any speech leaves an empty recording: no action request, next verb.
        self._waiting = None
        self._recording_status_callback(verb, None, "absent")
        self._run()
        return self

    def _recording_status_callback(self, verb, recording, status: str) -> None:
        url = verb.get("recordingStatusCallback")
        events = verb.get("recordingStatusCallbackEvent", "completed").split()
        if not url or status not in events:
            return
        params = {
            "RecordingStatus": status,
            "RecordingSource": "RecordVerb",
            "RecordingChannels": "1",
            "RecordingStartTime": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        }
        if recording is not None:
            recording_url, item = recording
            params.update(
                RecordingUrl=recording_url,
                RecordingSid=item.sid,
                RecordingDuration=str(item.duration),
            )
        else:
            params.update(RecordingSid=new_sid("RE"), RecordingDuration="0")
        absolute = urllib.parse.urljoin(self._document_url, url)

        def deliver() -> None:
            time.sleep(self.recording_callback_delay)
            status_code, _, _ = self.post(absolute, params)
            if status_code >= 400:
                self.result.errors.append(f"HTTP {status_code} from recording status callback")

        thread = threading.Thread(target=deliver, daemon=True)
        self._callbacks.append(thread)
        thread.start()

    def _finish(self) -> None:
        if self.result.ended:
            return
        self.result.ended = True
        self.result.heard.append(Heard("hangup", ""))
        duration = max(1, round(time.monotonic() - self._started))
        status_code, _, _ = self.post(
            self.base_url + "/twilio/status",
            {
                "CallDuration": str(duration),
                "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                "CallbackSource": "call-progress-events",
                "SequenceNumber": "0",
            },
            status="completed",
        )
        if status_code >= 400:
            self.result.errors.append(f"HTTP {status_code} from the status callback")


def _no_usable_answer(status_code: int) -> bool:
    """No HTTP answer at all (0) or a server error: what sends Twilio to the fallback URL."""
    return status_code == 0 or status_code >= 500


def as_dict(result: CallResult) -> dict[str, Any]:
    """A JSON-ready summary of a call."""
    return {
        "call_sid": result.call_sid,
        "end": result.end,
        "connected_to": result.connected_to,
        "queue": result.queue,
        "errors": result.errors,
        "heard": [item.__dict__ for item in result.heard],
    }
