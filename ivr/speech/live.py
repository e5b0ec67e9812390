"""Speech in real time: a call's Media Stream fed to the streaming recogniser, the result
stored, and the live call moved on with Twilio's REST call update.

At a prompt that listens (stream mode), the TwiML starts a Media Stream with a per-call
token (`stream_token`: an HMAC of CallSid and the step counter `seq`). The media socket
(ivr.web.media_socket) hands each stream's `start` to `LiveSpeech.begin`, which checks the
token and that the call is live at that listening step, and opens a recogniser stream.
Partial results are never acted on. On the FINAL result (or a failure) a background thread
stores the audio as a local WAV (where downloaded recordings live, so the console plays
it), the recognition (`recognitions`, as the Record path does) and its timings (timeline),
and then, if the call still listens for that utterance, asks Twilio to fetch
`/twilio/spoken/<step>?seq=N` (REST call update with Url): that webhook advances the flow
with the stored result. Keys win: a <Gather> action that came first moved the call on, so
the check finds another step and the late result changes nothing. A REST failure never
breaks a webhook: it is retried here with back-off and logged with the CallSid; the
caller meanwhile hears the <Gather> time out into the "still listening" polls, which read
the same stored result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ivr import db as database
from ivr import flow
from ivr.calls import FINAL_CALL_STATUSES, stream_recording_sid
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.speech.numbers import number_words, yes_no_words
from ivr.speech.recordings import recording_path
from ivr.speech.service import recognition_row
from ivr.vocabulary import EventKind, RecordingPurpose, Step

log = logging.getLogger("ivr.speech.live")

# The steps at which a streamed utterance of each purpose is still awaited.
AWAITING = {
    RecordingPurpose.ORDER_NUMBER: (Step.ORDER_NUMBER, Step.ORDER_WAIT),
    RecordingPurpose.CONFIRM: (Step.CONFIRM_ORDER, Step.CONFIRM_WAIT),
}
PURPOSE_AT = {Step.ORDER_NUMBER: RecordingPurpose.ORDER_NUMBER, Step.CONFIRM_ORDER: "confirm"}
UPDATE_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0)  # REST call update: first try, then back-off


class CallUpdater(Protocol):
    """What this needs of the REST adapter (ivr.twilio_api.TwilioApi)."""

    def update_call(
        self, sid: str, *, url: str | None = None, twiml: str | None = None, status=None
    ) -> None:
        """Twilio's call update: move a live call to new TwiML."""
        ...


def stream_token(secret: bytes, call_sid: str, seq: int) -> str:
    """The token a stream at (call, seq) carries in <Parameter name="token">."""
    return hmac.new(secret, f"stream:{call_sid}:{seq}".encode(), hashlib.sha256).hexdigest()[:40]


class Refusal(Exception):
    """A stream that does not belong to a live call at a listening step (close 1008)."""


class LiveStream:
    """One Media Stream of one call: its recogniser stream and how to close its socket."""

    def __init__(self, call_sid: str, seq: int, stream_sid: str, purpose: str, language: str):
        self.call_sid, self.seq, self.stream_sid = call_sid, seq, stream_sid
        self.purpose, self.language = purpose, language
        self.recording_sid = stream_recording_sid(call_sid, seq)
        self.recognizer_stream: Any = None
        self.close_socket: Any = None  # set by the media socket: close(code, reason)
        self.finished = threading.Event()

    def feed(self, payload: bytes) -> None:
        """One 20 ms μ-law frame."""
        if self.recognizer_stream is not None and not self.finished.is_set():
            self.recognizer_stream.feed_mulaw(payload)

    def close(self) -> None:
        """Release the recogniser (no result is acted on after this)."""
        self.finished.set()
        if self.recognizer_stream is not None:
            self.recognizer_stream.close()


class LiveSpeech:
    """Streams of live calls: token checks, results stored, calls moved on."""

    def __init__(
        self,
        settings: Any,
        recognizer: Any,
        twilio_api: CallUpdater | None,
        secret: bytes,
        threads: int = 8,
    ) -> None:
        self.settings = settings
        self.recognizer = recognizer
        self.twilio_api = twilio_api
        self.secret = secret
        self.base_url = settings.public_url.rstrip("/")  # set by the server when empty
        self.stream_port: int | None = None  # the media socket's port, once it listens
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ivr-live")
        self._lock = threading.Lock()
        self._streams: dict[str, list[LiveStream]] = {}
        self._free_only: set[str] = set()
        self.counters = {"opened": 0, "refused": 0, "final": 0, "failed": 0, "updates": 0}
        self.update_failures = 0
        # Seconds from the end of the caller's speech to the REST update being sent.
        self.latencies: list[float] = []

    # The media socket's side -----------------------------------------------------------

    def token(self, call_sid: str, seq: int) -> str:
        """The token for the stream a prompt at (call, seq) starts."""
        return stream_token(self.secret, call_sid, seq)

    def begin(self, call_sid: str, seq: int, token: str, stream_sid: str) -> LiveStream:
        """A stream's `start`: checked once; Refusal unless the call is live and listening."""
        expected = self.token(call_sid, seq)
        if not token or not hmac.compare_digest(expected.encode(), token.encode()):
            self._count("refused")
            raise Refusal("bad stream token")
        with database.connect(self.settings.db_path, self.settings.busy_timeout_ms) as db:
            call = call_store.get_call(db, call_sid)
        if call is None or call["ended_at"] or call["status"] in FINAL_CALL_STATUSES:
            self._count("refused")
            raise Refusal("the call is not live")
        state = flow.CallState.from_dict(json.loads(call["state"]))
        live = LiveStream(call_sid, seq, stream_sid, "", state.language)
        purpose = next(
            (
                purpose
                for purpose, steps in AWAITING.items()
                if state.step in steps and state.recording == live.recording_sid
            ),
            None,
        )
        if purpose is None:
            self._count("refused")
            raise Refusal("the call is not at a speech step for this stream")
        live.purpose = purpose
        with self._lock:
            older = self._streams.get(call_sid, [])
            self._streams[call_sid] = [live]
            self.counters["opened"] += 1
        for stream in older:  # one listening stream per call: the newest prompt's
            self._end_stream(stream, 1000, "superseded by a newer prompt")
        live.recognizer_stream = self.recognizer.open_stream(
            call_sid,
            state.language,
            self._grammar(purpose, state.language),
            on_event=lambda event: self._on_event(live, event),
        )
        log.info(
            "speech stream started",
            extra={"call_sid": call_sid, "seq": seq, "stream_sid": stream_sid, "purpose": purpose},
        )
        return live

    def forget(self, live: LiveStream) -> None:
        """The socket closed: release the recogniser unless its result is being stored."""
        with self._lock:
            streams = self._streams.get(live.call_sid, [])
            if live in streams:
                streams.remove(live)
            if not streams:
                self._streams.pop(live.call_sid, None)
        if live.recognizer_stream is not None and not live.recognizer_stream.done:
            live.close()

    def end_call(self, call_sid: str) -> None:
        """The call is over: close its streams (a stream never outlives its call)."""
        with self._lock:
            streams = self._streams.pop(call_sid, [])
        for live in streams:
            self._end_stream(live, 1000, "the call ended")

    def active_calls(self) -> int:
        """Calls with an open stream (for /healthz)."""
        with self._lock:
            return len(self._streams)

    def health(self) -> dict[str, Any]:
        """For /healthz: the recogniser back-end and the counts."""
        with self._lock:
            counters = dict(self.counters)
        return {
            "mode": "stream",
            "media_stream_port": self.stream_port,
            "open_calls": self.active_calls(),
            "counters": counters,
            "update_failures": self.update_failures,
            "recognizer": self.recognizer.health(),
        }

    def close(self) -> None:
        """Stop: close every stream, finish stores in flight, stop the recogniser."""
        with self._lock:
            calls = list(self._streams)
        for call_sid in calls:
            self.end_call(call_sid)
        self._pool.shutdown(wait=True, cancel_futures=False)
        self.recognizer.close()

    # Results ---------------------------------------------------------------------------

    def _on_event(self, live: LiveStream, event: Any) -> None:
        if event.kind == "partial" or live.finished.is_set():
            return  # partial results are never acted on
        if event.kind == "failed" and event.result.recognition.reason == "closed":
            return  # we closed it: the call moved on or ended
        live.finished.set()
        self._pool.submit(self._finish, live, event.result)

    def _finish(self, live: LiveStream, result: Any) -> None:
        try:
            self._store(live, result)
        except Exception:  # noqa: BLE001 - a failed store must not kill the pool thread
            log.exception("could not store a streamed recognition", extra=_extra(live))
            return
        finally:
            if live.recognizer_stream is not None:
                live.recognizer_stream.close()
        self._move_call_on(live, result)

    def _store(self, live: LiveStream, result: Any) -> None:
        recognition = result.recognition
        if (
            recognition.reason == "grammar_out_of_vocabulary"
            and live.language not in self._free_only
        ):
            self._free_only.add(live.language)
        wav = live.recognizer_stream.audio_wav()
        path = recording_path(self.settings.recordings_dir, live.call_sid, live.recording_sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(wav)
        partial.replace(path)
        row = recognition_row(recognition, live.purpose, live.language)
        now = datetime.now(UTC)
        stamp = database.timestamp(now)
        timings = result.timings.as_dict()
        with database.connect(self.settings.db_path, self.settings.busy_timeout_ms) as db:
            with database.write_transaction(db):
                speech_store.insert_recording_once(
                    db,
                    {
                        "sid": live.recording_sid,
                        "call_sid": live.call_sid,
                        "purpose": live.purpose,
                        "attempt": 1,
                        "url": None,
                        "duration": round(recognition.audio_seconds, 3),
                        "status": "stored",
                        "local_path": str(Path(path)),
                        "bytes": len(wav),
                        "created_at": stamp,
                        "updated_at": stamp,
                    },
                )
                speech_store.add_pending_recognition(
                    db,
                    {
                        "call_sid": live.call_sid,
                        "recording_sid": live.recording_sid,
                        "purpose": live.purpose,
                        "attempt": 1,
                        "language": live.language,
                        "status": "pending",
                        "created_at": stamp,
                    },
                )
                speech_store.complete_recognition(
                    db, live.recording_sid, {**row, "status": "done", "completed_at": stamp}
                )
                call_store.add_event(
                    db,
                    live.call_sid,
                    -1,
                    now,
                    EventKind.RECOGNITION,
                    live.purpose,
                    {
                        "recording_sid": live.recording_sid,
                        "stream_sid": live.stream_sid,
                        "streamed": True,
                        "ok": bool(row.get("ok")),
                        "text": row.get("text"),
                        "digits": row.get("digits"),
                        "confidence": row.get("confidence"),
                        "mode": row.get("mode"),
                        "model": row.get("model"),
                        "reason": row.get("reason"),
                        "ended_by": result.ended_by,
                        "backend": result.backend,
                        "failovers": result.failovers,
                        "timings": timings,
                    },
                )
        self._count("final" if row.get("ok") else "failed")
        log.info(
            "streamed recognition stored",
            extra={
                **_extra(live),
                "ok": bool(row.get("ok")),
                "reason": row.get("reason"),
                "end_of_speech_to_final": timings.get("end_of_speech_to_final"),
            },
        )

    def _move_call_on(self, live: LiveStream, result: Any) -> None:
        """REST call update to /twilio/spoken, if the call still awaits this utterance."""
        if self.twilio_api is None:
            return  # the "still listening" polls pick the result up
        for attempt, delay in enumerate(UPDATE_DELAYS):
            time.sleep(delay)
            where = self._awaiting(live)
            if where is None:
                log.info("spoken result not needed any more (keys won)", extra=_extra(live))
                return
            step, seq = where
            url = f"{self.base_url}/twilio/spoken/{step}?seq={seq}"
            try:
                self.twilio_api.update_call(live.call_sid, url=url)
            except Exception as error:  # noqa: BLE001 - retried; never reaches a webhook
                retryable = getattr(error, "retryable", True)
                self.update_failures += 1
                log.warning(
                    "REST call update failed%s",
                    "; retrying" if retryable and attempt + 1 < len(UPDATE_DELAYS) else "",
                    extra={**_extra(live), "error": str(error)[:200], "attempt": attempt + 1},
                )
                if not retryable:
                    return
                continue
            self._count("updates")
            end = result.timings.end_of_speech_at
            if end is not None:
                self.latencies.append(time.monotonic() - end)
            return

    def _awaiting(self, live: LiveStream) -> tuple[str, int] | None:
        """(step, seq) of the call if it still awaits this utterance, else None."""
        with database.connect(self.settings.db_path, self.settings.busy_timeout_ms) as db:
            call = call_store.get_call(db, live.call_sid)
        if call is None or call["ended_at"]:
            return None
        state = flow.CallState.from_dict(json.loads(call["state"]))
        if state.recording != live.recording_sid or state.step not in AWAITING[live.purpose]:
            return None
        return state.step, call["seq"]

    # Helpers ---------------------------------------------------------------------------

    def _grammar(self, purpose: str, language: str) -> list[str] | None:
        if language in self._free_only or not self.recognizer.supports_grammar(language):
            return None
        if purpose == RecordingPurpose.ORDER_NUMBER:
            return number_words(language)
        return yes_no_words(language)

    def _end_stream(self, live: LiveStream, code: int, reason: str) -> None:
        if not live.finished.is_set():
            live.close()
        if live.close_socket is not None:
            try:
                live.close_socket(code, reason)
            except Exception:  # noqa: BLE001 - the socket may be gone already
                log.debug("closing a media socket failed", exc_info=True)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1


def _extra(live: LiveStream) -> dict[str, Any]:
    return {"call_sid": live.call_sid, "seq": live.seq, "stream_sid": live.stream_sid}
