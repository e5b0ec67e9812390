"""Offline speech recognition with Vosk: the batch engine, decoding in worker processes.

Kaldi runs in separate processes so that a crash inside it (vosk 0.3.45 segfaults on an
empty grammar, aborts on some broken models) or a hung decode costs one utterance, never
the threaded web server. Each worker loads every configured model once, at start-up, and
builds one ``KaldiRecognizer`` per utterance (recognisers are not thread-safe).

Reasons a ``Recognition`` can carry when ``ok`` is False:

- ``no_speech``: the decoder heard no words (silence, noise);
- ``no_match``: only the unknown-word token was heard (speech outside the grammar);
- ``grammar_out_of_vocabulary``: none of the grammar's phrases is in the model's vocabulary;
- ``no_model``: no usable model for that language;
- ``busy``: no worker became free within the timeout;
- ``timeout``: the worker did not answer in time (it was killed and replaced);
- ``worker_crashed``: the worker process died (it was replaced);
- ``decoder_error``: Vosk raised an exception (the worker lives on);
- ``closed``: the engine was closed while the utterance waited.

The pieces live beside it: ``recognition`` (results, model facts), ``decoding`` (the only
vosk import), ``workers`` (the processes); this module keeps the batch engine and re-exports
the names callers have always imported from here.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ivr.speech.decoding import (
    build_grammar,
    check_vocabulary,
    load_model,
    unknown_word_token,
)
from ivr.speech.recognition import (
    DEFAULT_SAMPLE_RATE,
    UNKNOWN_WORD_TOKENS,
    GrammarError,
    ModelFacts,
    ModelsInWorkers,
    Recognition,
    Word,
    model_facts,
    model_graph,
    model_name_of,
    model_problem,
    model_sample_rate,
    normalise_grammar,
    supports_runtime_grammar,
)
from ivr.speech.workers import (
    DEFAULT_LOAD_TIMEOUT,
    Worker,
    WorkerCrashed,
    WorkerTimeout,
    spawn_ready_worker,
)

__all__ = [
    "DEFAULT_LOAD_TIMEOUT",
    "DEFAULT_SAMPLE_RATE",
    "UNKNOWN_WORD_TOKENS",
    "GrammarError",
    "Recognition",
    "SpeechEngine",
    "Word",
    "build_grammar",
    "check_vocabulary",
    "describe_model",
    "load_model",
    "model_graph",
    "model_name_of",
    "model_problem",
    "model_sample_rate",
    "normalise_grammar",
    "supports_runtime_grammar",
    "unknown_word_token",
]

logger = logging.getLogger("ivr.speech")

_CLOSED = object()


class SpeechEngine(ModelsInWorkers):
    """A pool of Vosk worker processes serving utterances in any configured language."""

    def __init__(
        self,
        models: Mapping[str, str | os.PathLike[str]],
        *,
        workers: int = 2,
        start_method: str = "spawn",
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        log_level: int = -1,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            # fork would copy the threaded web server's locks into the child.
            raise ValueError("start_method must be 'spawn' or 'forkserver'")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._context = multiprocessing.get_context(start_method)
        self._start_method = start_method
        self._size = workers
        self._load_timeout = load_timeout
        self._log_level = log_level
        self._facts = {lang: model_facts(lang, directory) for lang, directory in models.items()}
        for facts in self._facts.values():
            if facts.problem:
                logger.error("speech model for %r unusable: %s", facts.language, facts.problem)
        self._model_dirs = {
            lang: facts.model_dir for lang, facts in self._facts.items() if not facts.problem
        }
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._idle: queue.Queue[Any] = queue.Queue()
        self._worker_models: dict[str, dict[str, Any]] = {}
        self._counters = {"started": 0, "crashes": 0, "timeouts": 0, "start_failures": 0}
        self._warned: set[tuple[str, tuple[str, ...]]] = set()
        self._closed = False
        self._threads = ThreadPoolExecutor(
            max_workers=max(8, 4 * workers), thread_name_prefix="ivr-speech"
        )
        if self._model_dirs:
            for _ in range(workers):
                self._start_worker()

    # -- life cycle --

    def __enter__(self) -> SpeechEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_worker(self) -> None:
        """Start one worker in the background; it joins the pool once its models are loaded."""
        thread = threading.Thread(target=self._bring_up_worker, name="ivr-speech-start")
        thread.daemon = True
        thread.start()

    def _bring_up_worker(self) -> None:
        """Spawn a worker and wait for it, retrying with back-off if it dies while loading."""
        worker = spawn_ready_worker(
            self._context,
            self._model_dirs,
            log_level=self._log_level,
            name="ivr-speech-worker",
            load_timeout=self._load_timeout,
            is_closed=lambda: self._closed,
            on_start_failure=self._count_start_failure,
        )
        if worker is None:
            return
        with self._lock:
            closed = self._closed
            if not closed:
                self._workers.append(worker)
                self._worker_models = worker.models
                self._counters["started"] += 1
        if closed:
            worker.stop()
        else:
            self._idle.put(worker)

    def _count_start_failure(self) -> None:
        """Count a worker that died or hung while loading its models."""
        with self._lock:
            self._counters["start_failures"] += 1

    def wait_until_ready(self, timeout: float = DEFAULT_LOAD_TIMEOUT) -> bool:
        """Block until every worker has loaded its models (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._workers) >= self._size or not self._model_dirs:
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop every worker; utterances still waiting come back with reason "closed"."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        self._idle.put(_CLOSED)
        for worker in workers:
            worker.stop()
        self._threads.shutdown(wait=True)

    # -- what the engine offers --

    def health(self) -> dict[str, Any]:
        """Report the workers and models, for /healthz."""
        with self._lock:
            workers = list(self._workers)
            loaded = dict(self._worker_models)
            counters = dict(self._counters)
            closed = self._closed
        alive = sum(1 for worker in workers if worker.alive())
        models = {}
        for lang, facts in self._facts.items():
            status = loaded.get(lang, {})
            models[lang] = {
                "name": facts.name,
                "dir": facts.model_dir,
                "sample_rate": facts.sample_rate,
                "graph": facts.graph,
                "runtime_grammar": facts.runtime_grammar,
                "loaded": bool(status.get("ok")),
                "error": facts.problem or status.get("error"),
            }
        return {
            "ok": not closed and alive > 0 and bool(self.available_languages()),
            "closed": closed,
            "start_method": self._start_method,
            "workers": {
                "configured": self._size,
                "alive": alive,
                "idle": 0 if closed else self._idle.qsize(),
                "pids": [worker.pid for worker in workers],
                **counters,
            },
            "models": models,
        }

    def recognise(
        self,
        pcm: bytes,
        language: str,
        grammar: list[str] | None = None,
        timeout: float = 10.0,
    ) -> Recognition:
        """Decode mono s16le PCM at the model's rate; grammar=None means free speech.

        ``timeout`` bounds the wait for a free worker (then reason "busy") and, separately,
        the decode itself (then the worker is killed and replaced: reason "timeout").
        An empty grammar raises ValueError (GrammarError) here, before any worker sees it.
        """
        job = self._prepare(pcm, language, grammar)
        return self._execute(job, timeout, time.monotonic())

    def submit(
        self,
        pcm: bytes,
        language: str,
        grammar: list[str] | None = None,
        timeout: float = 10.0,
    ) -> Future[Recognition]:
        """Like recognise(), but return a Future at once."""
        job = self._prepare(pcm, language, grammar)
        return self._threads.submit(self._execute, job, timeout, time.monotonic())

    # -- test hooks: deliberately break a worker --

    def _crash_for_test(self, timeout: float = 30.0) -> Recognition:
        """Test hook: make a worker abort() mid-utterance, as a Kaldi crash would."""
        return self._execute(_Job("", ("crash_for_test",), 0.0, "free"), timeout, time.monotonic())

    def _hang_for_test(self, seconds: float, timeout: float) -> Recognition:
        """Test hook: make a worker sleep through its deadline, as a hung decode would."""
        job = _Job("", ("hang_for_test", seconds), 0.0, "free")
        return self._execute(job, timeout, time.monotonic())

    # -- internals --

    def _prepare(self, pcm: bytes, language: str, grammar: list[str] | None) -> _Job:
        """Check the arguments in the caller's thread; refuse what would crash Kaldi."""
        if self._closed:
            raise RuntimeError("speech engine is closed")
        if len(pcm) % 2:
            raise ValueError("pcm must be whole 16-bit samples (an even number of bytes)")
        phrases = None if grammar is None else normalise_grammar(grammar)
        facts = self._facts.get(language)
        rate = facts.sample_rate if facts else DEFAULT_SAMPLE_RATE
        wants_grammar = phrases is not None and facts is not None and facts.runtime_grammar
        if phrases is not None and facts and not facts.problem and not facts.runtime_grammar:
            self._warn_once(
                language,
                ("<no runtime grammar>",),
                "model %s for %r has a static graph: grammar ignored, decoding free speech",
                facts.name,
                language,
            )
        message = ("recognise", facts.model_dir if facts else "", rate, bytes(pcm), phrases)
        return _Job(language, message, len(pcm) / 2 / rate, "grammar" if wants_grammar else "free")

    def _warn_once(self, language: str, key: tuple[str, ...], text: str, *args: object) -> None:
        """Log a configuration warning the first time it happens for this engine."""
        with self._lock:
            if (language, key) in self._warned:
                return
            self._warned.add((language, key))
        logger.warning(text, *args)

    def _take_worker(self, deadline: float) -> Worker | None:
        """Take an idle, living worker, or None when none frees up before the deadline."""
        while True:
            try:
                worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if worker is _CLOSED:
                self._idle.put(_CLOSED)
                return None
            if worker.alive():
                return worker
            self._replace(worker, "crashes")

    def _replace(self, worker: Worker, counter: str) -> None:
        """Kill a broken worker and start a fresh one in its place."""
        worker.kill()
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            self._counters[counter] += 1
            closed = self._closed
        if not closed:
            logger.error(
                "speech worker %s %s; starting a new one",
                worker.pid,
                "timed out" if counter == "timeouts" else "died",
            )
            self._start_worker()

    def _execute(self, job: _Job, timeout: float, queued_at: float) -> Recognition:
        """Run one job on a worker and turn the answer into a Recognition."""
        facts = self._facts.get(job.language)
        fail = _failure_builder(job, facts)
        if job.message[0] == "recognise":
            if facts is None or facts.problem or job.language not in self.available_languages():
                return fail("no_model")
            if not job.message[3]:
                return fail("no_speech")
        worker = self._take_worker(queued_at + timeout)
        if worker is None:
            return fail("closed" if self._closed else "busy")
        try:
            kind, payload = worker.call(job.message, timeout)
        except WorkerCrashed:
            self._replace(worker, "crashes")
            return fail("closed" if self._closed else "worker_crashed")
        except WorkerTimeout:
            self._replace(worker, "timeouts")
            return fail("timeout")
        self._idle.put(worker)
        if kind != "result":
            logger.error("speech decoder error for %r: %s", job.language, payload)
            return fail("decoder_error")
        return self._to_recognition(job, facts, payload, fail)

    def _to_recognition(
        self,
        job: _Job,
        facts: ModelFacts | None,
        payload: dict[str, Any],
        fail: Callable[..., Recognition],
    ) -> Recognition:
        """Turn a worker's plain answer into a Recognition, logging dropped grammar words."""
        dropped = tuple(payload.get("dropped", ()))
        name = facts.name if facts else ""
        if dropped:
            self._warn_once(
                job.language,
                dropped,
                "grammar words not in the vocabulary of model %s (%r) were dropped: %s",
                name,
                job.language,
                ", ".join(dropped),
            )
        if payload.get("reason") == "grammar_out_of_vocabulary":
            logger.error("speech grammar unusable for %r: %s", job.language, payload["error"])
            return fail("grammar_out_of_vocabulary", dropped)
        return Recognition.from_words(
            payload.get("words", ()),
            language=job.language,
            mode=payload.get("mode", job.mode),
            model_name=name,
            processing_seconds=payload.get("processing_seconds", 0.0),
            audio_seconds=job.audio_seconds,
            dropped_words=dropped,
        )


@dataclass(frozen=True)
class _Job:
    """One request for a worker, prepared in the caller's thread."""

    language: str
    message: tuple[Any, ...]
    audio_seconds: float
    mode: str


def _failure_builder(job: _Job, facts: ModelFacts | None) -> Callable[..., Recognition]:
    """Return a function building failed Recognitions for this job."""

    def fail(reason: str, dropped_words: Sequence[str] = ()) -> Recognition:
        return Recognition.failure(
            reason,
            language=job.language,
            mode=job.mode,
            model_name=facts.name if facts else "",
            audio_seconds=job.audio_seconds,
            dropped_words=dropped_words,
        )

    return fail


# --- start-up check -------------------------------------------------------------------


def _default_number_words(language: str) -> list[str] | None:
    """Ask ivr.speech.numbers for the language's number words, if that module is there."""
    try:
        from ivr.speech import numbers
    except ImportError:
        return None
    try:
        return list(numbers.number_words(language))
    except (AttributeError, KeyError, LookupError, ValueError):
        return None


def describe_model(
    model_dir: str | os.PathLike[str],
    language: str,
    number_words: Sequence[str] | None = None,
    *,
    timeout: float = DEFAULT_LOAD_TIMEOUT,
    start_method: str = "spawn",
) -> dict[str, Any]:
    """Load a model in a throw-away worker and report rate, grammar support, missing words."""
    facts = model_facts(language, model_dir)
    words = list(number_words) if number_words is not None else _default_number_words(language)
    report: dict[str, Any] = {
        "language": language,
        "model_dir": facts.model_dir,
        "model_name": facts.name,
        "sample_rate": facts.sample_rate,
        "graph": facts.graph,
        "runtime_grammar": facts.runtime_grammar,
        "ok": False,
        "error": facts.problem,
        "load_seconds": None,
        "unknown_word_token": None,
        "number_words_checked": words is not None,
        "number_words_present": [],
        "number_words_missing": [],
    }
    if facts.problem:
        logger.error("speech model for %r unusable: %s", language, facts.problem)
        return report
    worker = Worker(
        multiprocessing.get_context(start_method),
        {language: facts.model_dir},
        -1,
        "ivr-speech-describe",
    )
    try:
        worker.wait_ready(timeout)
        status = worker.models[language]
        if not status.get("ok"):
            report["error"] = status.get("error")
            return report
        report["load_seconds"] = status["load_seconds"]
        kind, payload = worker.call(("describe", facts.model_dir, words or []), timeout)
    except WorkerCrashed:
        report["error"] = "the worker died while loading the model"
        return report
    except WorkerTimeout:
        report["error"] = f"the model did not load within {timeout:.0f} s"
        return report
    finally:
        worker.stop()
    if kind != "result":
        report["error"] = payload
        return report
    report.update(
        ok=True,
        unknown_word_token=payload["unknown_word_token"],
        number_words_present=payload["present"],
        number_words_missing=payload["missing"],
    )
    if payload["missing"]:
        logger.warning(
            "model %s (%r) lacks number words, they cannot be recognised: %s",
            facts.name,
            language,
            ", ".join(payload["missing"]),
        )
    if not facts.runtime_grammar:
        logger.warning(
            "model %s (%r) has a static graph: numbers will be decoded as free speech",
            facts.name,
            language,
        )
    return report
