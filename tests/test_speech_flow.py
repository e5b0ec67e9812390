"""The spoken order number and problem description, end to end through the emulator.

Most tests here SCRIPT THE RECOGNISER'S OUTPUT at its interface (ScriptedEngine below
stands in for ivr.speech.vosk.SpeechEngine), so the happy path "spoken number recognised"
is covered without a Russian model. Everything around it is real: the <Record> verb, the
recording served over HTTP by the emulator's media host, the fetcher with its host
allow-list and retries, pydub normalisation of the real audio fixture, the background job,
SQLite, and the polling webhooks. The real decoder runs in test_speech_engine_flow.py.
"""

import threading
import time
from pathlib import Path

import pytest

from ivr import db as database
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, HttpTransport, MediaServer
from ivr.speech.vosk import Recognition, Word

AUDIO = Path(__file__).parent / "fixtures" / "audio"
NOON = "2026-11-26T12:00:00+03:00"


class ScriptedEngine:
    """A stand-in recogniser that answers with scripted texts, in order (NOT real decoding)."""

    def __init__(self, *texts: str, languages=("ru", "en")):
        self.texts = list(texts)
        self.languages = list(languages)
        self.calls = []
        self.lock = threading.Lock()

    def recognise(self, pcm, language, grammar, timeout):
        with self.lock:
            self.calls.append({"bytes": len(pcm), "language": language, "grammar": grammar})
            text = self.texts.pop(0) if self.texts else ""
        words = tuple(
            Word(word, 0.9, i * 0.5, i * 0.5 + 0.4) for i, word in enumerate(text.split())
        )
        return Recognition(
            text=text,
            words=words,
            confidence=0.9 if text else 0.0,
            mode="grammar" if grammar else "free",
            model_name="scripted",
            processing_seconds=0.01,
            audio_seconds=len(pcm) / 32000,
            ok=bool(text),
            reason=None if text else "no_speech",
            language=language,
        )

    def available_languages(self):
        return self.languages

    def sample_rate(self, language):
        return 16000

    def supports_grammar(self, language):
        return True

    def health(self):
        return {"ok": True, "models": {lang: {"name": "scripted"} for lang in self.languages}}

    def close(self):
        pass


class RewrittenMedia:
    """The emulator's media host, but the RecordingUrl Twilio reports is rewritten."""

    def __init__(self, media: MediaServer, rewrite):
        self.media, self.rewrite = media, rewrite

    def add(self, account_sid, path, not_ready_fetches=0):
        url, recording = self.media.add(account_sid, path, not_ready_fetches)
        return self.rewrite(url), recording

    def add_silence(self, account_sid, seconds=0.0):
        url, recording = self.media.add_silence(account_sid, seconds)
        return self.rewrite(url), recording


def _call(server, media, **kwargs):
    return EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, at=NOON, media=media, **kwargs
    ).start()


def test_spoken_order_number_is_read_back_confirmed_and_described(speech_server, media):
    engine = ScriptedEngine(
        "сорок два ноль семь триста пятнадцать восемьсот девяносто",
        "заказ не пришёл прошу вернуть деньги",
    )
    server = speech_server(engine)
    call = _call(server, media).press("1")
    assert "или назовите его цифры после сигнала" in call.result.transcript
    call.silence()  # nothing typed: the IVR records instead
    assert call.waiting_for == "Record"
    call.speak(AUDIO / "ru_order_grouped.wav")
    assert "Одну секунду" in call.result.transcript
    assert "Вы назвали номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript
    call.press("1").press("2")
    assert "опишите проблему" in call.result.transcript and call.waiting_for == "Record"
    call.speak(AUDIO / "ru_problem.wav")
    assert "описание передано оператору" in call.result.transcript
    assert "Номер обращения" in call.result.transcript
    call.silence()
    call.wait_for_callbacks()
    assert call.result.end == "connected" and not call.result.errors
    assert engine.calls[0]["grammar"] and "сорок" in engine.calls[0]["grammar"]
    assert engine.calls[0]["bytes"] > 16000  # real audio, normalised to 16 kHz PCM
    deadline = time.monotonic() + 10
    with database.connect(server.db_path) as db:
        while time.monotonic() < deadline:
            ticket = ticket_store.ticket_for_call(db, call.result.call_sid)
            if ticket["description"]:
                break
            time.sleep(0.1)
        recognitions = speech_store.call_recognitions(db, call.result.call_sid)
        recordings = db.execute("SELECT * FROM recordings").fetchall()
        row = call_store.get_call(db, call.result.call_sid)
    assert ticket["order_number"] == "4207315890" and row["order_number"] == "4207315890"
    assert ticket["description"] == "заказ не пришёл прошу вернуть деньги"
    assert ticket["description_confidence"] == 0.9
    assert [(r["purpose"], r["ok"], r["mode"]) for r in recognitions] == [
        ("order_number", 1, "grammar"),
        ("description", 1, "free"),
    ]
    assert recognitions[0]["digits"] == "4207315890" and recognitions[0]["words"]
    assert all(Path(r["local_path"]).is_file() for r in recordings)
    assert all(r["status"] == "stored" for r in recordings)


def test_two_failed_spoken_numbers_fall_back_to_the_keypad(speech_server, media):
    server = speech_server(ScriptedEngine("сорок два", "один два три"))
    call = _call(server, media).press("1").silence()
    call.speak(AUDIO / "ru_order_digits_1.wav")
    assert "Не удалось разобрать номер заказа" in call.result.transcript
    assert "или назовите" in call.result.heard[-1].text  # speech still offered once more
    call.silence().speak(AUDIO / "ru_order_digits_2.wav")
    assert "введите номер на клавиатуре" in call.result.transcript
    assert "назовите" not in call.result.heard[-1].text
    call.press("4207315890")
    assert "Вы ввели номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript


def test_no_to_a_spoken_number_counts_as_a_failed_try(speech_server, media):
    server = speech_server(ScriptedEngine("один два три четыре пять шесть семь восемь девять ноль"))
    call = _call(server, media).press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "Вы назвали номер заказа: 1 2 3, 4 5 6, 7 8 9 0" in call.result.transcript
    call.press("2")
    assert "введём номер заново" in call.result.transcript


def test_silence_at_the_beep_is_a_failed_try(speech_server, media):
    server = speech_server(ScriptedEngine())
    call = _call(server, media).press("1").silence().silence()
    assert "Я не услышала номер" in call.result.transcript
    assert call.waiting_for == "Gather"


def test_three_failures_in_all_go_on_without_an_order_number(speech_server, media):
    server = speech_server(ScriptedEngine("да", "нет"))
    call = _call(server, media).press("1")
    call.silence().speak(AUDIO / "ru_yes.wav")
    call.silence().speak(AUDIO / "ru_no.wav")
    call.press("123")
    assert "Продолжим без номера заказа" in call.result.transcript


def test_a_zero_byte_recording_is_not_recognised_and_never_decoded(speech_server, media):
    engine = ScriptedEngine("четыре два ноль семь три один пять восемь девять ноль")
    server = speech_server(engine)
    call = _call(server, media).press("1").silence().speak(AUDIO / "bad_empty.wav")
    assert "Не удалось разобрать номер заказа" in call.result.transcript
    assert engine.calls == []
    with database.connect(server.db_path) as db:
        [recognition] = speech_store.call_recognitions(db, call.result.call_sid)
    assert (recognition["ok"], recognition["reason"]) == (0, "audio_empty")


@pytest.mark.parametrize(
    "fixture, reason",
    [
        ("bad_truncated_header.wav", "audio_unreadable"),
        ("silence_3s.wav", "silence"),
        ("bad_html_error_page.wav", "audio_unreadable"),
    ],
)
def test_bad_audio_ends_in_not_recognised_with_a_reason(speech_server, media, fixture, reason):
    engine = ScriptedEngine("четыре два ноль семь три один пять восемь девять ноль")
    server = speech_server(engine)
    call = _call(server, media).press("1").silence().speak(AUDIO / fixture)
    assert "Не удалось разобрать номер заказа" in call.result.transcript
    assert engine.calls == []
    with database.connect(server.db_path) as db:
        [recognition] = speech_store.call_recognitions(db, call.result.call_sid)
    assert recognition["reason"] == reason


def test_a_recording_that_is_late_is_fetched_after_retries(speech_server, media):
    server = speech_server(ScriptedEngine("4 2 0 7 3 1 5 8 9 0"))
    call = _call(server, media, recording_not_ready_fetches=2)
    call.press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "Вы назвали номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript
    assert list(media.recordings.values())[0].fetches == 3


def test_recordings_from_hosts_not_allowed_are_never_fetched(tmp_path, media):
    engine = ScriptedEngine("4 2 0 7 3 1 5 8 9 0")
    with LocalServer(
        speech_engine=engine,
        recording_hosts=("api.twilio.com",),
        recordings_dir=str(tmp_path / "rec"),
    ) as server:
        call = _call(server, media).press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
        assert "Не удалось разобрать номер заказа" in call.result.transcript
        with database.connect(server.db_path) as db:
            [recognition] = speech_store.call_recognitions(db, call.result.call_sid)
    assert recognition["reason"] == "fetch_not_allowed"
    assert media.requests == [] and engine.calls == []


def test_no_model_means_keypad_only_and_no_description_step(tmp_path, media):
    with LocalServer() as server:
        call = _call(server, media).press("1")
        assert "назовите" not in call.result.transcript
        call.silence()
        assert call.waiting_for == "Gather" and "Я вас не услышала" in call.result.transcript
        call.press("4207315890").press("1").press("1")
        assert (
            "опишите" not in call.result.transcript and "Номер обращения" in call.result.transcript
        )


def test_description_can_be_skipped_with_pound(speech_server, media):
    engine = ScriptedEngine()
    server = speech_server(engine)
    call = _call(server, media).press("0")
    assert "Номер обращения" in call.result.transcript  # 0 = operator now: no description step
    call2 = _call(server, media).press("1").press("4207315890").press("1").press("5")
    assert call2.waiting_for == "Record"
    call2.press("#")
    assert "Номер обращения" in call2.result.transcript
    assert "описание передано" not in call2.result.transcript


def test_english_caller_speaks_english(speech_server, media):
    engine = ScriptedEngine("five three eight one zero six two nine four seven")
    server = speech_server(engine)
    call = EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, at=NOON, media=media, to="+74952321000"
    ).start()
    call.press("2").press("1")
    assert "or say its digits after the beep" in call.result.transcript
    call.silence().speak(AUDIO / "en_order_digits.wav")
    assert "I heard order number 5 3 8, 1 0 6, 2 9 4 7" in call.result.transcript
    assert engine.calls[0]["language"] == "en"


def test_no_webhook_waits_for_recognition(speech_server, media):
    class SlowEngine(ScriptedEngine):
        def recognise(self, *args, **kwargs):
            time.sleep(2.5)  # a slow decode: the caller hears "one moment" and is polled
            return super().recognise(*args, **kwargs)

    server = speech_server(SlowEngine("4 2 0 7 3 1 5 8 9 0"))
    call = _call(server, media).press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "Вы назвали номер заказа" in call.result.transcript
    slowest = max(seconds for _, seconds in call.result.latencies)
    assert slowest < 1.0, call.result.latencies
    polls = [path for path, _ in call.result.latencies if path.startswith("/twilio/result/")]
    assert len(polls) >= 2


def test_the_recognised_number_scenario_with_a_scripted_recogniser(speech_server):
    """The happy-path scenario file, with the recogniser's output scripted (see the top)."""
    from ivr.scenarios import Runner, format_report, load_scenario

    path = Path(__file__).parent / "scenarios" / "speech" / "spoken_number_recognised.toml"
    server = speech_server(
        ScriptedEngine("четыре два ноль семь три один пять восемь девять ноль", "заказ не пришёл")
    )
    with Runner(server.base_url, server.auth_token, server.db_path) as runner:
        report = runner.run(load_scenario(path))
    assert report.passed, format_report(report)


@pytest.mark.parametrize(
    "answer, fixture, then",
    [
        ("да", "ru_yes.wav", "Выберите тему обращения"),
        ("нет", "ru_no.wav", "введём номер заново"),
        ("сорок", "ru_yes.wav", "Я не поняла ответ"),
    ],
)
def test_the_read_back_can_be_answered_by_voice(speech_server, media, answer, fixture, then):
    engine = ScriptedEngine("четыре два ноль семь три один пять восемь девять ноль", answer)
    server = speech_server(engine)
    call = _call(server, media).press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "нажмите 1 или скажите «да»" in call.result.transcript
    call.silence()  # no key: the IVR listens for "да" / "нет"
    assert call.waiting_for == "Record"
    before = len(call.result.heard)
    call.speak(AUDIO / fixture)
    assert then in " ".join(item.text for item in call.result.heard[before:])
    assert engine.calls[1]["grammar"] and "да" in engine.calls[1]["grammar"]
    if answer == "сорок":  # one spoken try only: the repeat is keypad-only
        assert "скажите" not in call.result.heard[-1].text


def test_twilios_copy_is_deleted_after_download_when_configured(speech_server, media):
    server = speech_server(ScriptedEngine("4 2 0 7 3 1 5 8 9 0"), delete_twilio_recordings=True)
    call = _call(server, media).press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "Вы назвали номер заказа" in call.result.transcript
    assert media.recordings == {}  # deleted from the "Twilio" media host...
    with database.connect(server.db_path) as db:
        [recording] = db.execute("SELECT * FROM recordings").fetchall()
    assert Path(recording["local_path"]).is_file()  # ...and kept locally
    assert any(path.endswith(".json") for path, _ in media.requests)
