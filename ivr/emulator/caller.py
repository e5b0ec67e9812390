"""A caller's leg: Twilio's side of one inbound call, driven step by step like a caller.

Each document the service answers with is checked against `twiml_rules` (a document
Twilio would refuse ends the call with Twilio's error, or goes to the fallback URL), then
executed as Twilio's TwiML pages describe it:

- <Gather> (the <Gather> page): keys go to the action with `Digits`; a time-out, or keys
  that leave nothing, run the next verb (unless actionOnEmptyResult="true").
- <Record> (the <Record> page): the recording ends by a key of finishOnKey (the action
  gets the recording and `Digits` = that key), by silence after speech, or by the caller
  hanging up (`Digits` = "hangup"). Verbs after <Record> are not reached when the action
  is requested. A silent recording is saved and sent to the action with
  RecordingDuration 0 (today's page); `empty_recording="skip"` plays the older page's
  behaviour instead: no action request, the next verb runs.
- <Dial> (the <Dial> page): the operator's leg ends as the scenario states (`dial_status`,
  one of the documented DialCallStatus values) and the action gets it.
- <Enqueue> (the <Enqueue> page): the caller waits, hearing the waitUrl's TwiML, until
  something takes them out: <Leave> in that TwiML (QueueResult=leave), or hanging up
  (QueueResult=hangup). Nothing here dequeues a caller by itself. With the REST stand-in
  attached (`twilio=`, ivr/emulator/rest.py), the caller waits in its queue registry: an
  operator's leg running <Dial><Queue> bridges them (the action gets QueueResult=bridged
  once the talk is over, "when the bridged parties disconnect"), and a REST update with a
  new Url moves them out (QueueResult=redirected, then the new Url's TwiML runs).
"""

from __future__ import annotations

import functools
import http.client
import random
import secrets
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ivr.emulator.http import API_VERSION, Transport, new_sid, sign
from ivr.emulator.media import MediaServer
from ivr.emulator.queueing import Bridge, QueuedCaller
from ivr.emulator.recording import RecordingCaller
from ivr.emulator.results import CallResult, Heard
from ivr.emulator.streams import EmulatedRest, MediaStream, mulaw_audio
from ivr.emulator.twiml_rules import TwimlRefused, check

FALLBACK_PATH = "/twilio/fallback"
MAX_REQUESTS_PER_CALL = 300
GATHER_FINISH_DEFAULT = "#"  # the <Gather> page
# The <Dial> page's DialCallStatus values.
DIAL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")
CONNECTED_DIAL_STATUSES = ("completed", "answered")
EMPTY_RECORDING_MODES = ("action", "skip")


def _driving(method):
    """A caller's action: one driver at a time; REST updates that came meanwhile run after."""

    @functools.wraps(method)
    def drive(self, *args, **kwargs):
        with self._changed:
            try:
                result = method(self, *args, **kwargs)
            finally:
                self._changed.notify_all()  # wake whoever waits for a change
        self._drain_redirects()
        return result

    return drive


class EmulatedCall(QueuedCaller, RecordingCaller):
    """One inbound call, driven step by step like a caller on a phone.

    Several threads may act on one call once the REST stand-in is attached (the scenario
    drives the caller; an operator's leg bridges them; a REST update redirects them), so
    every change of state happens under `self._lock`.
    """

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
        empty_recording: str = "action",
        rest: EmulatedRest | None = None,
        loopback_streams: bool = False,
        twilio=None,
    ):
        if dial_status not in DIAL_STATUSES:
            raise ValueError(f"dial_status must be one of {DIAL_STATUSES}, got {dial_status!r}")
        if empty_recording not in EMPTY_RECORDING_MODES:
            raise ValueError(f"empty_recording must be one of {EMPTY_RECORDING_MODES}")
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.to, self.from_ = to, from_
        self.account_sid = account_sid or new_sid("AC")
        self.result = CallResult(call_sid or new_sid("CA"))
        self.dial_status = dial_status
        self.empty_recording = empty_recording
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
        # time-out, 5xx, a document Twilio refuses) makes Twilio POST the number's fallback
        # URL with ErrorCode and ErrorUrl and run that TwiML. Twilio tries the fallback once;
        # more `fallback_tries` are a test harness's way of waiting for a server that is
        # restarting.
        self.fallback_on_failure = fallback_on_failure
        self.fallback_tries = fallback_tries
        self.fallback_retry_delay = fallback_retry_delay
        self._document_url = ""
        self._pending: list[ElementTree.Element] = []
        self._waiting: ElementTree.Element | None = None  # a <Gather> or <Record>
        self._queued: ElementTree.Element | None = None  # the <Enqueue> the caller waits in
        self._queued_at = 0.0
        self._queue_sid = ""
        self._started = time.monotonic()
        self._callbacks: list[threading.Thread] = []
        self._bridge: Bridge | None = None
        self._duration: int | None = None
        self._next_hold_round = 0.0
        self._bridged_enqueue: ElementTree.Element | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.last_status = 0
        self.last_body = ""
        # Explicit, off by default: accept <Stream url="ws://127.0.0.1..."> (loopback runs
        # have no TLS); Twilio itself connects to wss:// only.
        self.loopback_streams = loopback_streams
        self._redirects: list[str] = []
        if rest is not None:
            rest.register(self)
        # The REST stand-in (ivr/emulator/rest.py): its queues, and its Calls resource for
        # this call (fetch, update).
        self.twilio = twilio
        if twilio is not None:
            twilio.attach(self)

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
        """Request a document for the call and run it (or fail as Twilio would)."""
        status_code, body, absolute = self.post(url, extra, status)
        root, error_code, problem = self._usable(status_code, body, self.loopback_streams)
        is_fallback = urllib.parse.urlsplit(absolute).path == FALLBACK_PATH
        if root is None and self.fallback_on_failure and not is_fallback:
            status_code, body, absolute = self._post_fallback(str(error_code), absolute)
            root, error_code, problem = self._usable(status_code, body, self.loopback_streams)
        if root is None:
            # Twilio says "an application error has occurred" and ends the call.
            self.result.errors.append(f"{problem} from {absolute}")
            self.result.heard.append(Heard("error", problem))
            self._finish()
            return
        self._document_url = absolute
        self.result.documents += 1
        self._pending = list(root)
        self._run()

    @staticmethod
    def _usable(
        status_code: int, body: str, loopback_ws: bool = False
    ) -> tuple[ElementTree.Element | None, int, str]:
        """The checked document, or (None, Twilio's error code, what went wrong)."""
        if status_code != 200:
            return None, 11200, f"HTTP {status_code}"
        try:
            return check(body, loopback_ws=loopback_ws), 0, ""
        except TwimlRefused as refused:
            return None, refused.code, str(refused)

    # The caller's actions ----------------------------------------------------------------

    @_driving
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

    @property
    def in_queue(self) -> bool:
        """Whether the caller is waiting in a queue."""
        return self._queued is not None

    @_driving
    def press(self, keys: str) -> EmulatedCall:
        """Type keys at the pending <Gather> (or end a <Record> with a key)."""
        verb = self._require_waiting()
        self._listen()
        self.result.heard.append(Heard("keys", keys))
        if verb.tag == "Record":
            return self._record_ended(verb, None, finish_key=keys[:1])
        finish = verb.get("finishOnKey", GATHER_FINISH_DEFAULT)
        digits, finished_on = keys, ""
        if finish:
            cut = min((keys.index(key) for key in finish if key in keys), default=None)
            if cut is not None:
                digits, finished_on = keys[:cut], keys[cut]
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

    @_driving
    def silence(self) -> EmulatedCall:
        """Say and type nothing: the <Gather> times out / the <Record> records silence."""
        verb = self._require_waiting()
        self._listen()
        self.result.heard.append(Heard("silence", ""))
        if verb.tag == "Record":
            return self._record_ended(verb, None)
        self._waiting = None
        self._run()
        return self

    @_driving
    def speak(
        self, audio: str | Path, finish_key: str = "", during_prompt: bool = False
    ) -> EmulatedCall:
        """Speak: at a <Record>, the audio becomes the recording (ended by silence, or by
        `finish_key` pressed after speaking); at a <Gather> while a Media Stream runs, the
        audio goes over the stream in real time while the <Gather> waits for keys (see
        `_speak_into_stream`); a DTMF <Gather> without a stream does not listen to speech,
        so there it is a time-out."""
        verb = self._require_waiting()
        self._listen()
        self.result.heard.append(Heard("speak", str(audio)))
        streams = [stream for stream in self.result.streams if stream.open]
        if verb.tag == "Gather" and streams:
            return self._speak_into_stream(
                verb, streams[-1], Path(audio), finish_key, during_prompt
            )
        if verb.tag != "Record" or "speech" in verb.get("input", ""):
            self._waiting = None
            self._run()
            return self
        if finish_key:
            self.result.heard.append(Heard("keys", finish_key))
        return self._record_ended(verb, Path(audio), finish_key=finish_key)

    def _speak_into_stream(
        self,
        verb: ElementTree.Element,
        stream: MediaStream,
        audio: Path,
        finish_key: str,
        during_prompt: bool,
    ) -> EmulatedCall:
        """The caller speaks while the <Gather> waits; the service may move the call on.

        The <Gather> page: the timeout counts from the end of the prompt. The emulator says
        prompts instantly, so the caller speaking after the prompt starts the clock when
        the audio starts; `during_prompt` (barge-in) has the prompt end with the audio.
        Keys (`finish_key`) are pressed as soon as the audio has been sent.
        """
        seconds = stream.say(mulaw_audio(str(audio))) * self.time_scale
        if finish_key:
            stream.wait_said(seconds + 5)
            return self.press(finish_key)
        timeout = float(verb.get("timeout", "5")) * self.time_scale
        deadline = time.monotonic() + (seconds if during_prompt else 0.0) + timeout
        if self._wait_for_redirect(deadline - time.monotonic()):
            self._follow_redirect()
            return self
        self._waiting = None  # the <Gather> timed out with nothing typed: the next verb runs
        self._run()
        return self

    def redirect(self, url: str) -> None:
        """A REST call update with Url: stop the current verb, run the TwiML at `url`."""
        with _GUARD:
            self._redirects.append(url)
        self._drain_redirects()

    def _wait_for_redirect(self, seconds: float) -> bool:
        deadline = time.monotonic() + max(0.0, seconds)
        while not self._redirects and not self.result.ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.01))
        return bool(self._redirects)

    def _follow_redirect(self) -> None:
        with _GUARD:
            url = self._redirects.pop(0) if self._redirects else None
        if url is None or self.result.ended:
            return
        self.result.redirects.append(url)
        self._redirected(url)

    def _drain_redirects(self) -> None:
        """Apply pending updates now, unless the caller's own action is running (it will)."""
        while self._redirects and not self.result.ended:
            if not self._lock.acquire(blocking=False):
                return
            try:
                self._follow_redirect()
            finally:
                self._lock.release()

    @_driving
    def hang_up(self) -> EmulatedCall:
        """The caller hangs up: a pending <Record> or <Enqueue> reports it, then the call ends."""
        waiting, self._waiting = self._waiting, None
        self._pending = []
        if waiting is not None and waiting.tag == "Record" and not self.result.ended:
            self.result.heard.append(Heard("keys", "hangup"))
            self._record_ended(waiting, None, finish_key="hangup", caller_gone=True)
        if self._queued is not None and not self.result.ended:
            self._leave_queue("hangup", caller_gone=True)
        if self._bridge is not None and not self.result.ended:
            self._end_bridge("caller", caller_gone=True)
        self._finish()
        return self

    @_driving
    def fallback(self, error_code: str = "11200") -> EmulatedCall:
        """Twilio could not use the last answer and calls the number's fallback URL."""
        self._waiting = None
        self._fetch(
            self.base_url + FALLBACK_PATH,
            {"ErrorCode": error_code, "ErrorUrl": self._document_url},
        )
        return self

    @_driving
    def wait_in_queue(self) -> EmulatedCall:
        """Stay on hold: Twilio requests the queue's waitUrl again when its TwiML has ended."""
        if self._queued is None:
            raise RuntimeError("the caller is not in a queue")
        self._play_wait_url(self._queued)
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
            if self._redirects:  # a REST update stops the current document
                self._follow_redirect()
                return
            verb = self._pending.pop(0)
            if verb.tag == "Start":
                self._start_streams(verb)
            elif verb.tag == "Stop":
                self._stop_streams(verb)
            elif verb.tag == "Say":
                self._say(verb)
            elif verb.tag == "Play":
                self.result.heard.append(Heard("play", (verb.text or "").strip()))
            elif verb.tag == "Pause":
                # The caller waits: a poll loop must give background work real time.
                if self._wait_for_redirect(float(verb.get("length", "1")) * self.time_scale):
                    self._follow_redirect()
                    return
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
                self._fetch((verb.text or "").strip())
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
            elif verb.tag == "Leave":
                if self._queued is not None:  # the waitUrl's <Gather> action said <Leave>
                    self._leave_queue("leave")
                    return
                continue  # outside a queue's waitUrl, <Leave> does nothing
            else:
                self.result.errors.append(f"the emulator does not play <{verb.tag}> yet")
                self._finish()
                return
        if (
            not self._pending
            and self._waiting is None
            and self._queued is None
            and self._bridge is None
        ):
            self._finish()  # end of document: Twilio hangs up

    def _start_streams(self, verb: ElementTree.Element) -> None:
        """<Start><Stream>: fork the caller's audio to the WebSocket; the call goes on."""
        for noun in verb:
            parameters = {
                item.get("name", ""): item.get("value", "")
                for item in noun
                if item.tag == "Parameter"
            }
            try:
                stream = MediaStream(
                    noun.get("url", ""),
                    call_sid=self.result.call_sid,
                    account_sid=self.account_sid,
                    parameters=parameters,
                    time_scale=self.time_scale,
                )
            except Exception as error:  # noqa: BLE001 - as Twilio: the call goes on
                self.result.stream_errors.append(f"{noun.get('url')}: {error}")
                continue
            stream.name = noun.get("name", "")
            self.result.streams.append(stream)

    def _stop_streams(self, verb: ElementTree.Element) -> None:
        names = {noun.get("name") for noun in verb}
        for stream in self.result.streams:
            if getattr(stream, "name", None) in names:
                stream.stop()

    def _say(self, verb: ElementTree.Element) -> None:
        self.result.heard.append(Heard("say", (verb.text or "").strip(), verb.get("language", "")))

    def _dial(self, verb: ElementTree.Element) -> None:
        endpoint = next(iter(verb), None)
        target = (
            (endpoint.text or "").strip() if endpoint is not None else (verb.text or "").strip()
        )
        if endpoint is not None and endpoint.tag == "Client":
            target = "client:" + target
        self.result.heard.append(Heard("dial", target))
        connected = self.dial_status in CONNECTED_DIAL_STATUSES
        if connected:
            self.result.connected_to = target
        if verb.get("action"):
            self._fetch(
                verb.get("action"),
                {
                    "DialCallStatus": self.dial_status,
                    "DialCallSid": new_sid("CA"),
                    "DialCallDuration": "42" if connected else "0",
                },
            )
        else:
            self._run()  # without an action, Twilio goes on with the next verb

    def _finish(self) -> None:
        if self.result.ended:
            return
        self.result.ended = True
        if self._queued is not None and self.twilio is not None:
            self.twilio.queues.leave(self)
        for stream in self.result.streams:
            stream.stop()  # Twilio ends a call's streams with the call
        self._queued = None
        self.result.heard.append(Heard("hangup", ""))
        duration = max(1, round(time.monotonic() - self._started))
        self._duration = duration
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


_GUARD = threading.Lock()  # guards the pending REST updates of every call (held briefly)


def _no_usable_answer(status_code: int) -> bool:
    """No HTTP answer at all (0) or a server error: what sends Twilio to the fallback URL."""
    return status_code == 0 or status_code >= 500
