"""Background recognition: fetch a finished recording, normalise it, decode it, store the result.

Nothing here runs inside a webhook Twilio is waiting on. The recording status callback
hands a job to `SpeechService.start`, which returns at once; a thread fetches the audio
(with retries while Twilio still answers 404), pydub turns it into the model's PCM, a
Vosk worker process decodes it, and the result lands in the `recognitions` table, where
the polling webhook finds it. Every failure ends as a stored "not recognised" with its
reason, never as an exception in a call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ivr import db as database
from ivr.config import Settings
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.speech.audio import AudioError, is_silent, to_model_pcm
from ivr.speech.numbers import parse_order_number, parse_yes_no, yes_no_words
from ivr.vocabulary import EventKind, Language, RecordingPurpose

log = logging.getLogger("ivr.speech")

ORDER_NUMBER = RecordingPurpose.ORDER_NUMBER
CONFIRM = RecordingPurpose.CONFIRM
DESCRIPTION = RecordingPurpose.DESCRIPTION
MAX_SECONDS = {ORDER_NUMBER: 30.0, CONFIRM: 10.0, DESCRIPTION: 75.0}
DECODE_TIMEOUT = {ORDER_NUMBER: 10.0, CONFIRM: 5.0, DESCRIPTION: 60.0}


class Recogniser(Protocol):
    """What the service needs of a speech engine (ivr.speech.vosk.SpeechEngine)."""

    def recognise(self, pcm: bytes, language: str, grammar: list[str] | None, timeout: float):
        """Decode PCM; return a Recognition."""
        ...

    def available_languages(self) -> list[str]:
        """Languages with a loaded model."""
        ...

    def sample_rate(self, language: str) -> int:
        """The model's sample rate."""
        ...

    def supports_grammar(self, language: str) -> bool:
        """Whether the model can take a runtime grammar."""
        ...

    def health(self) -> dict[str, Any]:
        """Workers and models."""
        ...

    def close(self) -> None:
        """Stop the workers."""
        ...


class Fetcher(Protocol):
    """What the service needs of the recording fetcher (ivr.speech.recordings)."""

    def fetch(self, url: str, call_sid: str, recording_sid: str):
        """Download a recording; return a result with ok, path, reason."""
        ...


class SpeechService:
    """Runs recognitions in the background and stores their results."""

    def __init__(
        self,
        db_path: str,
        engine: Recogniser | None,
        fetcher: Fetcher,
        number_words: Callable[[str], list[str]],
        busy_timeout_ms: int = 5000,
        threads: int = 8,
        delete_remote: bool = False,
    ):
        self.db_path = db_path
        self.engine = engine
        self.fetcher = fetcher
        self.number_words = number_words
        self.busy_timeout_ms = busy_timeout_ms
        # 152-FZ: once our copy is stored, Twilio's copy of the recording can be deleted.
        self.delete_remote = delete_remote
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ivr-recognise")
        self._free_only: set[str] = set()
        self._lock = threading.Lock()
        self.counters = {"started": 0, "recognised": 0, "not_recognised": 0}
        # Seconds from "Twilio says the recording is complete" to "result stored".
        self.latencies: deque[float] = deque(maxlen=1000)
        self.model_reports: dict[str, dict[str, Any]] = {}
        self._check: threading.Thread | None = None

    def check_models(self, model_dirs: dict[str, str]) -> threading.Thread:
        """At start-up, in the background: log loudly which number words a model lacks."""
        from ivr.speech.vosk import describe_model

        def check() -> None:
            for language, model_dir in model_dirs.items():
                try:
                    report = describe_model(model_dir, language, self.number_words(language))
                except Exception:  # noqa: BLE001 - a failed check must not stop the service
                    log.exception("could not check the %s model's vocabulary", language)
                    continue
                self.model_reports[language] = report
                missing = report.get("number_words_missing") or []
                if missing and len(missing) == len(self.number_words(language)):
                    log.error(
                        "the %s model knows none of the %s number words (wrong language?): "
                        "spoken order numbers will not be recognised",
                        report.get("name") or model_dir,
                        language,
                    )

        self._check = threading.Thread(target=check, name="ivr-model-check", daemon=True)
        self._check.start()
        return self._check

    def languages(self) -> tuple[str, ...]:
        """Languages a caller may speak in (a model is configured and loading or loaded)."""
        return tuple(self.engine.available_languages()) if self.engine else ()

    def start(self, call_sid: str, recording_sid: str, url: str, purpose: str, language: str):
        """Queue the recognition of a completed recording; returns at once."""
        with self._lock:
            self.counters["started"] += 1
        queued = time.perf_counter()
        return self._pool.submit(self._run, call_sid, recording_sid, url, purpose, language, queued)

    def health(self) -> dict[str, Any]:
        """For /healthz: engine workers and models, and counts."""
        engine = self.engine.health() if self.engine else {"ok": False, "models": {}}
        with self._lock:
            counters = dict(self.counters)
        for language, report in self.model_reports.items():
            if language in engine.get("models", {}):
                engine["models"][language]["number_words_missing"] = len(
                    report.get("number_words_missing") or []
                )
        fetcher = getattr(self.fetcher, "health", None)
        return {**engine, "counters": counters, **(fetcher() if fetcher else {})}

    def close(self) -> None:
        """Finish queued jobs and stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=False)
        if self._check is not None:
            self._check.join(timeout=60)
        if self.engine is not None:
            self.engine.close()

    # The job ---------------------------------------------------------------------------

    def _run(self, call_sid, recording_sid, url, purpose, language, queued) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = self._recognise(call_sid, recording_sid, url, purpose, language)
        except Exception:  # noqa: BLE001 - a job must always end with a stored result
            log.exception("recognition failed", extra={"call_sid": call_sid})
            result = {"ok": 0, "reason": "internal_error"}
        result.setdefault("processing_seconds", round(time.perf_counter() - started, 3))
        self._store(call_sid, recording_sid, purpose, result)
        with self._lock:
            self.counters["recognised" if result.get("ok") else "not_recognised"] += 1
            self.latencies.append(time.perf_counter() - queued)
        log.info(
            "recognition stored",
            extra={
                "call_sid": call_sid,
                "recording_sid": recording_sid,
                "purpose": purpose,
                "ok": bool(result.get("ok")),
                "reason": result.get("reason"),
                "seconds_after_completion": round(time.perf_counter() - queued, 3),
            },
        )
        return result

    def _recognise(self, call_sid, recording_sid, url, purpose, language) -> dict[str, Any]:
        fetched = self.fetcher.fetch(url, call_sid, recording_sid)
        self._note_recording(recording_sid, fetched)
        if not fetched.ok:
            return {"ok": 0, "reason": f"fetch_{fetched.reason}"}
        if self.delete_remote and not self.fetcher.delete_remote(url):
            log.warning(
                "Twilio's copy of the recording was not deleted",
                extra={"call_sid": call_sid, "recording_sid": recording_sid},
            )
        if self.engine is None or language not in self.engine.available_languages():
            return {"ok": 0, "reason": "no_model"}
        try:
            audio = to_model_pcm(
                Path(fetched.path).read_bytes(),
                self.engine.sample_rate(language),
                max_seconds=MAX_SECONDS.get(purpose, 60.0),
            )
        except AudioError as error:
            return {"ok": 0, "reason": f"audio_{error.reason}"}
        if is_silent(audio):
            return {"ok": 0, "reason": "silence", "audio_seconds": audio.duration_seconds}
        grammar = self._grammar(purpose, language)
        recognition = self.engine.recognise(
            audio.samples, language, grammar, DECODE_TIMEOUT.get(purpose, 30.0)
        )
        if grammar is not None and recognition.reason == "grammar_out_of_vocabulary":
            log.error(
                "the %s model knows none of the number words: decoding free speech instead",
                language,
            )
            with self._lock:
                self._free_only.add(language)
            recognition = self.engine.recognise(
                audio.samples, language, None, DECODE_TIMEOUT.get(purpose, 30.0)
            )
        return recognition_row(recognition, purpose, language)

    def _grammar(self, purpose: str, language: str) -> list[str] | None:
        """Number words (or yes/no words) where the model takes a grammar; free otherwise."""
        if purpose not in (ORDER_NUMBER, CONFIRM) or language in self._free_only:
            return None
        if not self.engine.supports_grammar(language):
            return None
        return self.number_words(language) if purpose == ORDER_NUMBER else yes_no_words(language)

    # Storage ---------------------------------------------------------------------------

    def _note_recording(self, recording_sid: str, fetched) -> None:
        now = datetime.now(UTC)
        with database.connect(self.db_path, self.busy_timeout_ms) as db:
            with database.write_transaction(db):
                speech_store.update_recording(
                    db,
                    recording_sid,
                    {
                        "status": "stored" if fetched.ok else "failed",
                        "local_path": str(fetched.path) if fetched.ok else None,
                        "bytes": getattr(fetched, "bytes", None),
                        "error": None if fetched.ok else fetched.reason,
                        "updated_at": database.timestamp(now),
                    },
                )

    def _store(self, call_sid: str, recording_sid: str, purpose: str, row: dict) -> None:
        now = datetime.now(UTC)
        row = {**row, "status": "done", "completed_at": database.timestamp(now)}
        with database.connect(self.db_path, self.busy_timeout_ms) as db:
            with database.write_transaction(db):
                speech_store.complete_recognition(db, recording_sid, row)
                call_store.add_event(
                    db,
                    call_sid,
                    -1,
                    now,
                    EventKind.RECOGNITION,
                    purpose,
                    {
                        "recording_sid": recording_sid,
                        "ok": bool(row.get("ok")),
                        "text": row.get("text"),
                        "digits": row.get("digits"),
                        "confidence": row.get("confidence"),
                        "mode": row.get("mode"),
                        "model": row.get("model"),
                        "reason": row.get("reason"),
                        "processing_seconds": row.get("processing_seconds"),
                    },
                )
                if purpose == DESCRIPTION and row.get("text"):
                    ticket_store.set_ticket_description(
                        db, call_sid, row["text"], row.get("confidence"), now
                    )


def recognition_row(recognition: Any, purpose: str, language: str) -> dict[str, Any]:
    """A Recognition as a `recognitions` row: order digits or yes/no read from the words."""
    row = {
        "mode": recognition.mode,
        "model": recognition.model_name,
        "text": recognition.text,
        "confidence": round(recognition.confidence, 3),
        "words": json.dumps([list(word) for word in recognition.words], ensure_ascii=False),
        "audio_seconds": round(recognition.audio_seconds, 3),
        "processing_seconds": round(recognition.processing_seconds, 3),
        "ok": int(recognition.ok),
        "reason": recognition.reason,
    }
    if purpose == ORDER_NUMBER and recognition.ok:
        parsed = parse_order_number(recognition.text, language)
        row["digits"] = parsed.digits
        if not parsed.ok:
            row.update(ok=0, reason=f"not_an_order_number: {parsed.reason}")
    if purpose == CONFIRM and recognition.ok:
        answer = parse_yes_no(recognition.text, language)
        # Stored as the key it stands for: "1" yes, "2" no.
        row["digits"] = {True: "1", False: "2"}.get(answer, "")
        if answer is None:
            row.update(ok=0, reason="not_yes_or_no")
    return row


def build_speech_service(settings: Settings, engine: Recogniser | None = None) -> SpeechService:
    """The background recogniser the settings describe: Vosk workers, the fetcher.

    `engine` replaces the Vosk engine the settings would build (tests script it).
    """
    from ivr.speech.numbers import number_words
    from ivr.speech.recordings import RecordingFetcher

    built_here = engine is None and bool(settings.vosk_models)
    if built_here:
        from ivr.speech.vosk import SpeechEngine

        engine = SpeechEngine(dict(settings.vosk_models), workers=settings.speech_workers)
    for language in Language:
        if engine is None or language not in engine.available_languages():
            log.warning(
                "no Vosk model for %s (IVR_VOSK_MODEL_%s): order numbers by keypad only",
                language,
                language.upper(),
            )
    service = SpeechService(
        settings.db_path,
        engine,
        RecordingFetcher.from_settings(settings),
        number_words,
        settings.busy_timeout_ms,
        delete_remote=settings.delete_twilio_recordings,
    )
    if built_here:
        service.check_models(dict(settings.vosk_models))
    return service
