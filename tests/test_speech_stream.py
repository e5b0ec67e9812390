"""The streaming recogniser's audio pieces (ivr.speech.streaming), no decoder involved.

μ-law decoding, the stateful resampler, the speech/silence rule and the server list are
pure functions of their input, so they are tested with synthetic signals in milliseconds.
Recognition itself is tested with the real model in test_speech_stream_vosk.py.
"""

from __future__ import annotations

import io
import math
import warnings
import wave

import numpy as np
import pytest

from ivr.speech.stream_remote import parse_server_urls
from ivr.speech.streaming import (
    EndpointRules,
    Resampler,
    SpeechDetector,
    decode_mulaw,
    level_dbfs,
)

FRAME = 160  # 20 ms at 8 kHz, as Twilio sends


def tone(seconds: float, frequency: float = 440.0, rate: int = 8000, dbfs: float = -12.0):
    """A sine tone as s16le PCM."""
    t = np.arange(int(seconds * rate)) / rate
    amplitude = 32767 * 10 ** (dbfs / 20) * math.sqrt(2)
    return (amplitude * np.sin(2 * math.pi * frequency * t)).astype("<i2").tobytes()


def silence(seconds: float, rate: int = 8000) -> bytes:
    return bytes(2 * int(seconds * rate))


def frames(pcm: bytes, size: int = 2 * FRAME) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def test_mulaw_table_matches_the_reference_decoder() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the stdlib's G.711 (audioop-lts on Python 3.13+)
    every_byte = bytes(range(256))
    assert decode_mulaw(every_byte) == audioop.ulaw2lin(every_byte, 2)


def test_resampling_in_frames_equals_resampling_at_once() -> None:
    pcm = tone(1.0, 300) + tone(0.5, 1800)
    whole = Resampler(8000, 16000).process(pcm)
    streamed = Resampler(8000, 16000)
    pieces = b"".join(streamed.process(frame) for frame in frames(pcm))
    assert pieces == whole
    assert len(whole) == 2 * len(pcm)


@pytest.mark.parametrize("frequency", [200.0, 1000.0, 3000.0])
def test_resampler_keeps_telephone_band_tones(frequency: float) -> None:
    pcm = tone(1.0, frequency)
    out = Resampler(8000, 16000).process(pcm)
    assert level_dbfs(out[3200:]) == pytest.approx(level_dbfs(pcm[1600:]), abs=0.5)
    samples = np.frombuffer(out, "<i2")[1600:]  # past the start-up transient
    peak = np.argmax(np.abs(np.fft.rfft(samples))) * 16000 / len(samples)
    assert peak == pytest.approx(frequency, abs=2)


def test_same_rate_is_left_alone() -> None:
    pcm = tone(0.1)
    assert Resampler(8000, 8000).process(pcm) is pcm


@pytest.mark.parametrize(
    "pcm, expected",
    [(silence(0.02), -math.inf), (tone(0.02, dbfs=-20.0), -20.0), (tone(0.02, dbfs=-6.0), -6.0)],
)
def test_level_dbfs(pcm: bytes, expected: float) -> None:
    assert level_dbfs(pcm) == pytest.approx(expected, abs=0.3)


def run_detector(pcm: bytes, rules: EndpointRules) -> tuple[SpeechDetector, str | None, float]:
    """Feed 20 ms frames until a verdict; return it and the audio time it came at."""
    detector = SpeechDetector(rules)
    for frame in frames(pcm):
        _, verdict = detector.push(frame)
        if verdict:
            return detector, verdict, detector.audio_seconds
    return detector, None, detector.audio_seconds


def test_silence_after_speech_ends_the_utterance() -> None:
    rules = EndpointRules(trailing_silence=0.6)
    pcm = silence(0.5) + tone(1.0) + silence(0.3) + tone(0.4) + silence(2.0)
    detector, verdict, at = run_detector(pcm, rules)
    assert verdict == "silence"
    assert detector.speech_started == pytest.approx(0.5)
    assert detector.speech_ended == pytest.approx(2.2)
    assert at == pytest.approx(2.8)  # the 0.3 s pause inside did not end it


def test_silence_before_speech_and_clicks_end_nothing() -> None:
    click = tone(0.04)
    detector, verdict, _ = run_detector(silence(2.0) + click + silence(3.0), EndpointRules())
    assert verdict is None and detector.speech_started is None


def test_quiet_line_noise_is_not_speech() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 150, 8000 * 3)).astype("<i2").tobytes()  # about -47 dBFS
    detector, verdict, _ = run_detector(noise, EndpointRules())
    assert verdict is None and detector.speech_started is None


def test_an_endless_utterance_is_cut() -> None:
    _, verdict, at = run_detector(tone(5.0), EndpointRules(max_utterance=2.0))
    assert verdict == "max_length" and at == pytest.approx(2.0)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("ws://a:2700", [("ws://a:2700", ())]),
        (" ws://a:2700 , wss://b/asr ", [("ws://a:2700", ()), ("wss://b/asr", ())]),
        ("ru=ws://a:2700,en=ws://b:2700", [("ws://a:2700", ("ru",)), ("ws://b:2700", ("en",))]),
        ("ru+en=ws://a:2700,", [("ws://a:2700", ("ru", "en"))]),
        ("", []),
    ],
)
def test_parse_server_urls(value: str, expected: list) -> None:
    assert parse_server_urls(value) == expected


@pytest.mark.parametrize("value", ["http://a:2700", "a:2700", "ru=tcp://a"])
def test_parse_server_urls_refuses_other_schemes(value: str) -> None:
    with pytest.raises(ValueError):
        parse_server_urls(value)


def test_wav_of_a_stream_is_what_came_in() -> None:
    from ivr.speech.streaming import Stream

    class Recorder(Stream):
        def _send_audio(self, pcm: bytes) -> None:
            pass

        def _send_end(self) -> None:
            pass

    stream = Recorder(
        "CA1",
        "ru",
        None,
        target_rate=16000,
        rules=EndpointRules(),
        on_event=None,
        backend="test",
    )
    payload = bytes(range(256)) * 5
    for frame in frames(payload, FRAME):
        stream.feed_mulaw(frame)
    with wave.open(io.BytesIO(stream.audio_wav())) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.readframes(wav.getnframes()) == decode_mulaw(payload)
    stream.close()
    assert stream.done and stream.result(0).recognition.reason == "closed"
