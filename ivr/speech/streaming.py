"""Streaming recognition: a caller's utterance fed frame by frame, one interface, two back-ends.

Twilio Media Streams send the caller's audio as 20 ms frames of 8 kHz μ-law. A ``Stream``
decodes each frame (a G.711 table), keeps the 8 kHz PCM (so the utterance can be saved as
a WAV locally), resamples it once to the back-end's rate with a stateful polyphase filter
(no temporary files, no clicks at frame boundaries), and hands it to the back-end:

- ``LocalStreamingRecognizer`` (ivr.speech.stream_local): worker processes, each stream
  pinned to one; a crash or hang fails the streams of that worker, nothing else;
- ``RemoteStreamingRecognizer`` (ivr.speech.stream_remote): vosk-server machines over the
  established WebSocket protocol, spread by load, with fail-over and audio replay.

The utterance ends at the first of:

- ``endpoint``: Vosk's own endpointing closed a segment with words in it;
- ``silence``: ``EndpointRules.trailing_silence`` seconds of quiet after speech (Vosk's
  endpointing rarely fires in free mode, so this rule is what ends most utterances);
- ``max_length``: ``EndpointRules.max_utterance`` seconds of audio;
- ``finish``: the caller of ``Stream.finish()`` (e.g. the prompt timed out).

Partial results are reported (``StreamEvent`` kind "partial") for display and logs only;
nothing may act on them. Exactly one "final" or "failed" event ends every stream, and a
failure carries a reason so the call can fall back to the keypad, never to silence.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from ivr.speech.recognition import Recognition, Word

logger = logging.getLogger("ivr.speech")

TWILIO_SAMPLE_RATE = 8000
TWILIO_FRAME_SECONDS = 0.02
SAMPLE_WIDTH_BYTES = 2


# --- audio: μ-law, resampling, speech detection ----------------------------------------


def _mulaw_table() -> np.ndarray:
    """The G.711 μ-law expansion table: byte -> 16-bit linear sample."""
    table = np.empty(256, dtype=np.int16)
    for byte in range(256):
        inverted = ~byte & 0xFF
        exponent = (inverted >> 4) & 0x07
        magnitude = ((((inverted & 0x0F) << 3) + 0x84) << exponent) - 0x84
        table[byte] = -magnitude if inverted & 0x80 else magnitude
    return table


MULAW_TABLE = _mulaw_table()


def decode_mulaw(payload: bytes) -> bytes:
    """Decode G.711 μ-law bytes (Twilio's audio/x-mulaw) to mono s16le PCM."""
    return MULAW_TABLE[np.frombuffer(payload, dtype=np.uint8)].astype("<i2").tobytes()


class Resampler:
    """A streaming polyphase resampler: feed chunks, get output that does not depend on them.

    Windowed-sinc (Kaiser) low-pass at the lower of the two Nyquist rates; the last input
    samples are carried over between chunks, so 20 ms frames give the same samples as the
    whole buffer at once (minus nothing: only the filter's ~1 ms delay).
    """

    def __init__(self, source_rate: int, target_rate: int, taps_per_phase: int = 16) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError("sample rates must be positive")
        divisor = math.gcd(source_rate, target_rate)
        self.up = target_rate // divisor
        self.down = source_rate // divisor
        self.source_rate = source_rate
        self.target_rate = target_rate
        self._taps = taps_per_phase
        length = taps_per_phase * self.up
        cutoff = 0.5 / max(self.up, self.down) * 0.95  # cycles per upsampled sample
        centre = np.arange(length) - (length - 1) / 2
        kernel = 2 * cutoff * np.sinc(2 * cutoff * centre) * np.kaiser(length, 8.0) * self.up
        # phases[p, k] = kernel[p + k * up]: the taps applied to x[n - k] for phase p.
        self._phases = kernel.reshape(taps_per_phase, self.up).T.copy()
        self._history = np.zeros(taps_per_phase - 1)
        self._seen = 0  # input samples consumed so far
        self._next_output = 0  # index of the next output sample

    @property
    def identity(self) -> bool:
        """True when no resampling is needed."""
        return self.up == self.down

    def process(self, pcm: bytes) -> bytes:
        """Resample a chunk of mono s16le PCM; keeps state for the next chunk."""
        if self.identity or not pcm:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        buffer = np.concatenate([self._history, samples])
        seen = self._seen + len(samples)
        last = (seen * self.up - 1) // self.down  # last output whose newest input has arrived
        outputs = np.arange(self._next_output, last + 1)
        position = outputs * self.down
        newest = position // self.up - (self._seen - len(self._history))
        windows = buffer[newest[:, None] - np.arange(self._taps)[None, :]]
        values = np.einsum("jk,jk->j", windows, self._phases[position % self.up])
        self._history = buffer[-(self._taps - 1) :]
        self._seen = seen
        self._next_output = last + 1
        return np.clip(np.round(values), -32768, 32767).astype("<i2").tobytes()


def level_dbfs(pcm: bytes) -> float:
    """RMS level of s16le PCM in dB relative to full scale (-inf for digital silence)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if not len(samples):
        return -math.inf
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20 * math.log10(rms / 32768) if rms else -math.inf


@dataclass(frozen=True)
class EndpointRules:
    """When an utterance counts as started and as over (tuned on the fixtures; see README).

    The trailing silence is the caller's dead air before anything can happen, so it is as
    short as the fixtures allow. Measured with this detector on tests/fixtures/audio: the
    longest pause inside a spoken order number is 0.20-0.32 s (digits and groups, ru and
    en), inside a problem description 0.46-0.58 s. So 0.6 s ends an order number or a
    yes/no right after the last word; a description needs a longer rule (1.0 s or more).
    """

    trailing_silence: float = 0.6
    # Loud audio needed before an utterance counts as started: longer than a click.
    min_speech: float = 0.1
    # Louder than this is speech; telephone line noise sits well below it.
    speech_threshold_dbfs: float = -40.0
    max_utterance: float = 30.0


class SpeechDetector:
    """Energy-based speech/silence tracking over the 8 kHz PCM as it arrives."""

    def __init__(self, rules: EndpointRules, sample_rate: int = TWILIO_SAMPLE_RATE) -> None:
        self.rules = rules
        self.sample_rate = sample_rate
        self.audio_seconds = 0.0
        self.speech_started: float | None = None  # audio time
        self.speech_ended: float | None = None  # audio time of the end of the last loud frame
        self._loud_run_start: float | None = None

    def push(self, pcm: bytes) -> tuple[bool, str | None]:
        """Account for one frame; return (frame was loud, end verdict or None)."""
        start = self.audio_seconds
        self.audio_seconds += len(pcm) / SAMPLE_WIDTH_BYTES / self.sample_rate
        loud = level_dbfs(pcm) >= self.rules.speech_threshold_dbfs
        if loud:
            if self._loud_run_start is None:
                self._loud_run_start = start
            if (
                self.speech_started is None
                and self.audio_seconds - self._loud_run_start >= self.rules.min_speech - 1e-9
            ):
                self.speech_started = self._loud_run_start
            self.speech_ended = self.audio_seconds
        else:
            self._loud_run_start = None
        if self.audio_seconds >= self.rules.max_utterance:
            return loud, "max_length"
        if (
            self.speech_started is not None
            and self.speech_ended is not None
            and self.audio_seconds - self.speech_ended >= self.rules.trailing_silence - 1e-9
        ):
            return loud, "silence"
        return loud, None


# --- what a stream reports --------------------------------------------------------------


@dataclass
class StreamTimings:
    """Monotonic instants (time.monotonic) of one stream's milestones; None until reached."""

    opened_at: float
    opened_at_utc: datetime
    first_audio_at: float | None = None
    speech_started_at: float | None = None
    # Arrival of the last loud frame: when the caller stopped speaking.
    end_of_speech_at: float | None = None
    end_requested_at: float | None = None
    final_at: float | None = None
    # The same, in seconds of audio from the first frame.
    speech_started_audio: float | None = None
    end_of_speech_audio: float | None = None

    @property
    def end_of_speech_to_final(self) -> float | None:
        """Seconds from the caller's last sound to the final result (the dead air we cause)."""
        if self.end_of_speech_at is None or self.final_at is None:
            return None
        return self.final_at - self.end_of_speech_at

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the timeline: seconds after the stream opened, and the UTC start."""

        def since(instant: float | None) -> float | None:
            return None if instant is None else round(instant - self.opened_at, 3)

        latency = self.end_of_speech_to_final
        return {
            "opened_at": self.opened_at_utc.isoformat(),
            "first_audio": since(self.first_audio_at),
            "speech_started": since(self.speech_started_at),
            "end_of_speech": since(self.end_of_speech_at),
            "end_requested": since(self.end_requested_at),
            "final": since(self.final_at),
            "end_of_speech_to_final": None if latency is None else round(latency, 3),
        }


@dataclass(frozen=True)
class StreamResult:
    """How a stream ended: the recognition (ok or not), why it ended, and where it ran."""

    recognition: Recognition
    ended_by: str  # endpoint | silence | max_length | finish | failed
    timings: StreamTimings
    backend: str  # "local" or the vosk-server URL that gave the answer
    failovers: int = 0

    @property
    def ok(self) -> bool:
        """True when words were recognised."""
        return self.recognition.ok


@dataclass(frozen=True)
class StreamEvent:
    """Something a stream reports: a partial (never act on it), its final, or its failure."""

    kind: str  # partial | final | failed
    call_sid: str
    text: str = ""
    result: StreamResult | None = None
    at: float = field(default_factory=time.monotonic)


EventHandler = Callable[[StreamEvent], None]


class Stream:
    """One utterance of one call, fed as it arrives; back-ends subclass the four hooks.

    Thread-safe: ``feed_mulaw`` may be called from the socket thread while a back-end thread
    delivers results. ``feed_mulaw`` never blocks on the decoder. ``on_event`` is called
    from a back-end thread and must return quickly.
    """

    def __init__(
        self,
        call_sid: str,
        language: str,
        grammar: Sequence[str] | None,
        *,
        target_rate: int,
        rules: EndpointRules,
        on_event: EventHandler | None,
        backend: str,
    ) -> None:
        self.call_sid = call_sid
        self.language = language
        self.grammar = None if grammar is None else list(grammar)
        self.rules = rules
        self.backend = backend
        self.failovers = 0
        self.partial = ""
        self.timings = StreamTimings(opened_at=time.monotonic(), opened_at_utc=datetime.now(UTC))
        self._on_event = on_event
        self._resampler = Resampler(TWILIO_SAMPLE_RATE, target_rate)
        self._detector = SpeechDetector(rules)
        self._audio: list[bytes] = []  # 8 kHz PCM as received, for the WAV
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._ended_by: str | None = None
        self._result: StreamResult | None = None

    # -- what the integrator calls --

    def feed_mulaw(self, payload: bytes) -> None:
        """Take one Media Streams frame (μ-law bytes, base64-decoded already)."""
        self.feed_pcm(decode_mulaw(payload))

    def feed_pcm(self, pcm: bytes) -> None:
        """Take 8 kHz mono s16le PCM (what a μ-law frame decodes to)."""
        if len(pcm) % SAMPLE_WIDTH_BYTES:
            raise ValueError("pcm must be whole 16-bit samples")
        with self._lock:
            if self._ended_by is not None or self._done.is_set():
                return  # the utterance is over: later audio belongs to no one
            now = time.monotonic()
            if self.timings.first_audio_at is None:
                self.timings.first_audio_at = now
            self._audio.append(pcm)
            loud, verdict = self._detector.push(pcm)
            if loud:
                self.timings.end_of_speech_at = now
                self.timings.end_of_speech_audio = self._detector.speech_ended
            if self._detector.speech_started is not None and self.timings.speech_started_at is None:
                self.timings.speech_started_at = now
                self.timings.speech_started_audio = self._detector.speech_started
            self._send_audio(self._resampler.process(pcm))
            if verdict is not None:
                self._request_end(verdict)

    def finish(self, timeout: float | None = 10.0) -> StreamResult | None:
        """End the utterance now (e.g. the prompt timed out) and wait for its result."""
        with self._lock:
            if self._ended_by is None and not self._done.is_set():
                self._request_end("finish")
        return self.result(timeout)

    def result(self, timeout: float | None = None) -> StreamResult | None:
        """Wait for the final result (or failure); None if it did not come in time."""
        self._done.wait(timeout)
        return self._result

    @property
    def done(self) -> bool:
        """True once the final result or the failure is in."""
        return self._done.is_set()

    def close(self) -> None:
        """Release the back-end's resources; a stream without a result ends as "closed"."""
        self._deliver_failure("closed")
        self._release()

    def audio_pcm(self) -> bytes:
        """The caller's audio so far: 8 kHz mono s16le, as received."""
        with self._lock:
            return b"".join(self._audio)

    def audio_wav(self) -> bytes:
        """The caller's audio so far as an 8 kHz mono 16-bit WAV file."""
        output = io.BytesIO()
        with wave.open(output, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(SAMPLE_WIDTH_BYTES)
            wav.setframerate(TWILIO_SAMPLE_RATE)
            wav.writeframes(self.audio_pcm())
        return output.getvalue()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- back-end hooks --

    def _send_audio(self, pcm: bytes) -> None:
        """Pass resampled PCM to the decoder without blocking (called under the lock)."""
        raise NotImplementedError

    def _send_end(self) -> None:
        """Ask the decoder for its final result (called under the lock, once)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the decoder's resources (idempotent)."""

    # -- called by back-ends --

    def _request_end(self, reason: str) -> None:
        """End the utterance for a reason; the back-end then delivers the final result."""
        with self._lock:
            if self._ended_by is not None or self._done.is_set():
                return
            self._ended_by = reason
            self.timings.end_requested_at = time.monotonic()
            self._send_end()

    def _deliver_partial(self, text: str) -> None:
        """Report a partial result (for display only)."""
        if self._done.is_set() or text == self.partial:
            return
        self.partial = text
        self._emit(StreamEvent("partial", self.call_sid, text=text))

    def _deliver_final(
        self,
        words: Sequence[Word],
        *,
        mode: str,
        model_name: str,
        processing_seconds: float,
        dropped_words: Sequence[str] = (),
        backend: str | None = None,
    ) -> None:
        """Store the final result and report it (only the first result or failure counts)."""
        with self._lock:
            if self._done.is_set():
                return
            self.timings.final_at = time.monotonic()
            recognition = Recognition.from_words(
                words,
                language=self.language,
                mode=mode,
                model_name=model_name,
                processing_seconds=processing_seconds,
                audio_seconds=self._detector.audio_seconds,
                dropped_words=dropped_words,
            )
            self._result = StreamResult(
                recognition,
                self._ended_by or "endpoint",
                self.timings,
                backend or self.backend,
                self.failovers,
            )
            self._done.set()
        self._emit(StreamEvent("final", self.call_sid, recognition.text, self._result))

    def _deliver_failure(self, reason: str) -> None:
        """End the stream without words, for a reason (worker_crashed, servers_unavailable...)."""
        with self._lock:
            if self._done.is_set():
                return
            self.timings.final_at = time.monotonic()
            recognition = Recognition.failure(
                reason,
                language=self.language,
                mode="grammar" if self.grammar is not None else "free",
                audio_seconds=self._detector.audio_seconds,
            )
            self._result = StreamResult(
                recognition, "failed", self.timings, self.backend, self.failovers
            )
            self._done.set()
        if reason != "closed":
            logger.warning(
                "speech stream failed: %s",
                reason,
                extra={"call_sid": self.call_sid, "backend": self.backend},
            )
        self._emit(StreamEvent("failed", self.call_sid, result=self._result))

    def _emit(self, event: StreamEvent) -> None:
        """Call the integrator's handler; its exceptions are logged, never raised here."""
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - a broken handler must not kill the back-end thread
            logger.exception(
                "speech stream event handler failed", extra={"call_sid": self.call_sid}
            )


class StreamingRecognizer(Protocol):
    """What the call flow needs of a streaming recogniser (either back-end)."""

    def open_stream(
        self,
        call_sid: str,
        language: str,
        grammar: Sequence[str] | None = None,
        *,
        on_event: EventHandler | None = None,
        rules: EndpointRules | None = None,
    ) -> Stream:
        """Start one utterance; grammar=None decodes free speech."""
        ...

    def available_languages(self) -> list[str]:
        """Languages a stream may be opened in."""
        ...

    def supports_grammar(self, language: str) -> bool:
        """Whether a grammar restricts decoding for this language."""
        ...

    def health(self) -> dict[str, Any]:
        """For /healthz and /metrics."""
        ...

    def close(self) -> None:
        """Stop the back-end; open streams end as failed ("closed")."""
        ...
