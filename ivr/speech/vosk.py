"""Offline speech recognition with Vosk, decoded in worker processes (the only vosk import).

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger("ivr.speech")

DEFAULT_SAMPLE_RATE = 16000
WORKER_NICENESS = 10
# Unknown-word tokens, best first: most Vosk models call it "[unk]", the Korean small
# model (and other Kaldi recipes) "<UNK>".
UNKNOWN_WORD_TOKENS = ("[unk]", "<UNK>", "<unk>")
# How much audio is fed to the decoder at a time.
CHUNK_SECONDS = 0.25
# Waiting for a worker to load its models: the big server models take minutes.
DEFAULT_LOAD_TIMEOUT = 300.0


class GrammarError(ValueError):
    """A grammar the decoder cannot use (empty, or nothing of it in the vocabulary)."""


class Word(NamedTuple):
    """One recognised word: the word, its confidence 0..1, start and end in seconds."""

    word: str
    conf: float
    start: float
    end: float


@dataclass(frozen=True)
class Recognition:
    """The outcome of decoding one utterance."""

    text: str
    words: tuple[Word, ...]
    confidence: float
    mode: str
    model_name: str
    processing_seconds: float
    audio_seconds: float
    ok: bool
    reason: str | None = None
    language: str = ""
    dropped_words: tuple[str, ...] = field(default=())

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio (0 when there was no audio)."""
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @classmethod
    def failure(
        cls,
        reason: str,
        *,
        language: str = "",
        mode: str = "free",
        model_name: str = "",
        audio_seconds: float = 0.0,
        processing_seconds: float = 0.0,
        dropped_words: Sequence[str] = (),
    ) -> Recognition:
        """Build a result that recognised nothing, for the given reason."""
        return cls(
            text="",
            words=(),
            confidence=0.0,
            mode=mode,
            model_name=model_name,
            processing_seconds=processing_seconds,
            audio_seconds=audio_seconds,
            ok=False,
            reason=reason,
            language=language,
            dropped_words=tuple(dropped_words),
        )


# --- facts read from a model folder, without loading it -------------------------------


def model_sample_rate(model_dir: str | os.PathLike[str]) -> int:
    """Read the sample rate from ``<model>/conf/mfcc.conf`` (Kaldi's default: 16000)."""
    conf = Path(model_dir) / "conf" / "mfcc.conf"
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        return DEFAULT_SAMPLE_RATE
    for line in lines:
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if name == "--sample-frequency" and value.strip():
            return int(float(value))
    return DEFAULT_SAMPLE_RATE


def model_graph(model_dir: str | os.PathLike[str]) -> str | None:
    """Name the decoding graph: "HCLG" (static), "HCLr+Gr" (runtime grammars) or None."""
    graph = Path(model_dir) / "graph"
    # Vosk loads HCLG.fst when it exists, whatever else is there (model.cc).
    if (graph / "HCLG.fst").is_file() or (Path(model_dir) / "HCLG.fst").is_file():
        return "HCLG"
    if (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file():
        return "HCLr+Gr"
    return None


def supports_runtime_grammar(model_dir: str | os.PathLike[str]) -> bool:
    """Tell whether Vosk can restrict this model to a grammar at run time."""
    return model_graph(model_dir) == "HCLr+Gr"


def model_name_of(model_dir: str | os.PathLike[str]) -> str:
    """A readable model name: the folder name, or the package's for a folder called "model"."""
    path = Path(model_dir).resolve()
    return path.parent.name if path.name == "model" else path.name


def model_problem(model_dir: str | os.PathLike[str]) -> str | None:
    """Say what makes a folder unusable as a Vosk model, or None when it looks fine."""
    path = Path(model_dir)
    if not path.is_dir():
        return f"model folder {path} does not exist"
    for required in ("am/final.mdl", "conf/model.conf"):
        if not (path / required).is_file():
            return f"model folder {path} has no {required}"
    if model_graph(path) is None:
        return f"model folder {path} has no graph (HCLG.fst or HCLr.fst + Gr.fst)"
    return None


def normalise_grammar(grammar: Sequence[str]) -> list[str]:
    """Tidy grammar phrases (trim, one space, no repeats) and refuse an empty grammar."""
    if isinstance(grammar, str):
        raise GrammarError("grammar must be a list of phrases, not one string")
    phrases: list[str] = []
    for phrase in grammar:
        if not isinstance(phrase, str):
            raise GrammarError(f"grammar phrases must be strings, got {phrase!r}")
        tidy = " ".join(phrase.split())
        if tidy and tidy not in UNKNOWN_WORD_TOKENS and tidy not in phrases:
            phrases.append(tidy)
    if not phrases:
        # An empty JSON list crashes vosk 0.3.45 (segfault), so it never reaches Kaldi.
        raise GrammarError("grammar must list at least one phrase")
    return phrases


# --- worker side: everything below that touches vosk runs inside a worker process -------

_MODEL_CACHE: dict[str, Any] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def _vosk() -> Any:
    """Import vosk on first use, so the web process never loads Kaldi."""
    import vosk

    return vosk


def load_model(model_dir: str | os.PathLike[str]) -> Any:
    """Load a Vosk model once per process and keep it (workers call this, not requests)."""
    key = str(Path(model_dir).resolve())
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = _vosk().Model(key)
            _MODEL_CACHE[key] = model
        return model


def check_vocabulary(model: Any, words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split words (or phrases, every word of which must be known) into present and missing."""
    present: list[str] = []
    missing: list[str] = []
    for phrase in words:
        tokens = phrase.split()
        known = bool(tokens) and all(model.vosk_model_find_word(t) >= 0 for t in tokens)
        (present if known else missing).append(phrase)
    return present, missing


def unknown_word_token(model: Any) -> str | None:
    """Return the model's own unknown-word token ("[unk]", "<UNK>", ...), if it has one."""
    for token in UNKNOWN_WORD_TOKENS:
        if model.vosk_model_find_word(token) >= 0:
            return token
    return None


def build_grammar(model: Any, grammar: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return (phrases for Vosk, dropped phrases): known phrases plus the unknown-word token."""
    phrases = normalise_grammar(grammar)
    present, missing = check_vocabulary(model, phrases)
    if missing:
        logger.warning(
            "grammar phrases missing from the model's vocabulary were dropped: %s",
            ", ".join(missing),
        )
    if not present:
        raise GrammarError(
            "none of the grammar phrases is in the model's vocabulary "
            f"(wrong language model?): {', '.join(missing)}"
        )
    token = unknown_word_token(model)
    # Without an unknown-word path every sound is forced onto a grammar word.
    return present + ([token] if token else []), missing


def _decode(
    model_dir: str, sample_rate: int, pcm: bytes, grammar: Sequence[str] | None
) -> dict[str, Any]:
    """Decode one utterance with a fresh recogniser; return plain data for the parent."""
    vosk = _vosk()
    started = time.perf_counter()
    model = load_model(model_dir)
    dropped: list[str] = []
    mode = "free"
    if grammar is not None and supports_runtime_grammar(model_dir):
        try:
            phrases, dropped = build_grammar(model, grammar)
        except GrammarError as error:
            return {
                "reason": "grammar_out_of_vocabulary",
                "error": str(error),
                "mode": "grammar",
                "dropped": list(grammar),
            }
        recogniser = vosk.KaldiRecognizer(
            model, sample_rate, json.dumps(phrases, ensure_ascii=False)
        )
        mode = "grammar"
    else:
        recogniser = vosk.KaldiRecognizer(model, sample_rate)
    recogniser.SetWords(True)
    segments: list[str] = []
    chunk = max(2, int(sample_rate * CHUNK_SECONDS) * 2)
    for offset in range(0, len(pcm), chunk):
        if recogniser.AcceptWaveform(pcm[offset : offset + chunk]):
            # An endpoint closed a segment; its result is lost unless taken now.
            segments.append(recogniser.Result())
    segments.append(recogniser.FinalResult())
    token = unknown_word_token(model)
    words = []
    for segment in segments:
        for item in json.loads(segment).get("result", []):
            word = "[unk]" if item["word"] == token else item["word"]
            words.append(
                (word, float(item.get("conf", 1.0)), float(item["start"]), float(item["end"]))
            )
    return {
        "words": words,
        "mode": mode,
        "dropped": dropped,
        "processing_seconds": time.perf_counter() - started,
        "reason": None,
    }


def _describe(model_dir: str, words: Sequence[str]) -> dict[str, Any]:
    """Check words against a loaded model's vocabulary (for the start-up check)."""
    model = load_model(model_dir)
    present, missing = check_vocabulary(model, [w for w in words if w.strip()])
    return {"present": present, "missing": missing, "unknown_word_token": unknown_word_token(model)}


def _worker_main(conn: Connection, model_dirs: dict[str, str], log_level: int) -> None:
    """Run in a worker process: load the models, then answer requests until told to stop."""
    # Ctrl-C belongs to the parent, which stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Decoding yields the CPU to the web server: webhooks must stay fast under speech load.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    # The parent logs dropped grammar words once, through its configured handlers; here
    # they would repeat on stderr for every utterance.
    logger.setLevel(logging.ERROR)
    models: dict[str, dict[str, Any]] = {}
    try:
        _vosk().SetLogLevel(log_level)
    except Exception as error:  # vosk missing or broken: report it, do not die
        models = {lang: {"ok": False, "error": f"vosk unavailable: {error}"} for lang in model_dirs}
    else:
        for language, model_dir in model_dirs.items():
            started = time.perf_counter()
            try:
                load_model(model_dir)
            except Exception as error:
                models[language] = {"ok": False, "error": str(error)}
            else:
                models[language] = {"ok": True, "load_seconds": time.perf_counter() - started}
    conn.send(("ready", {"pid": os.getpid(), "models": models}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        kind, *args = message
        try:
            if kind == "recognise":
                reply: tuple[str, Any] = ("result", _decode(*args))
            elif kind == "describe":
                reply = ("result", _describe(*args))
            elif kind == "crash_for_test":
                os.abort()  # test hook: die the way a Kaldi crash does
            elif kind == "hang_for_test":
                time.sleep(args[0])  # test hook: a decode that never ends
                reply = ("result", {})
            else:
                reply = ("error", f"unknown request {kind!r}")
        except Exception as error:
            reply = ("error", f"{type(error).__name__}: {error}")
        conn.send(reply)


# --- parent side ----------------------------------------------------------------------


class _WorkerCrashed(Exception):
    """The worker process died."""


class _WorkerTimeout(Exception):
    """The worker did not answer in time."""


class _Worker:
    """One worker process and the pipe to it; used by one thread at a time."""

    def __init__(self, context: Any, model_dirs: dict[str, str], log_level: int, name: str) -> None:
        parent_end, child_end = context.Pipe()
        self.process = context.Process(
            target=_worker_main,
            args=(child_end, model_dirs, log_level),
            name=name,
            daemon=True,
        )
        self.process.start()
        # Only the child may hold its end, so the parent sees EOF when the child dies.
        child_end.close()
        self.conn: Connection = parent_end
        self.models: dict[str, dict[str, Any]] = {}
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        """The worker's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Tell whether the process is still running."""
        return self.process.is_alive()

    def _receive(self, timeout: float) -> tuple[str, Any]:
        """Wait for the worker's next message, its death, or the timeout."""
        ready = wait([self.conn, self.process.sentinel], timeout=max(0.0, timeout))
        if not ready:
            raise _WorkerTimeout
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                raise _WorkerCrashed from None
        raise _WorkerCrashed

    def wait_ready(self, timeout: float) -> None:
        """Wait until the worker has loaded its models."""
        kind, payload = self._receive(timeout)
        if kind != "ready":
            raise _WorkerCrashed
        self.models = payload["models"]

    def call(self, message: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
        """Send one request and wait for its answer."""
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            raise _WorkerCrashed from None
        return self._receive(timeout)

    def kill(self) -> None:
        """End the process at once."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self, grace: float = 2.0) -> None:
        """Ask the process to exit, then kill it if it does not."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(grace)
        self.kill()


@dataclass(frozen=True)
class _ModelFacts:
    """What the parent knows about one configured model without loading it."""

    language: str
    model_dir: str
    name: str
    sample_rate: int
    graph: str | None
    problem: str | None

    @property
    def runtime_grammar(self) -> bool:
        """Whether grammars can be set at run time."""
        return self.graph == "HCLr+Gr"


def _facts(language: str, model_dir: str | os.PathLike[str]) -> _ModelFacts:
    """Collect the facts about one model folder."""
    path = str(Path(model_dir).resolve())
    return _ModelFacts(
        language=language,
        model_dir=path,
        name=model_name_of(path),
        sample_rate=model_sample_rate(path),
        graph=model_graph(path),
        problem=model_problem(path),
    )


_CLOSED = object()


class SpeechEngine:
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
        self._facts = {lang: _facts(lang, directory) for lang, directory in models.items()}
        for facts in self._facts.values():
            if facts.problem:
                logger.error("speech model for %r unusable: %s", facts.language, facts.problem)
        self._model_dirs = {
            lang: facts.model_dir for lang, facts in self._facts.items() if not facts.problem
        }
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
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
        delay = 1.0
        while not self._closed:
            worker = _Worker(self._context, self._model_dirs, self._log_level, "ivr-speech-worker")
            try:
                worker.wait_ready(self._load_timeout)
            except (_WorkerCrashed, _WorkerTimeout) as error:
                worker.kill()
                with self._lock:
                    self._counters["start_failures"] += 1
                logger.error(
                    "speech worker failed to start (%s); retrying in %.0f s",
                    "crashed" if isinstance(error, _WorkerCrashed) else "timed out",
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            for language, status in worker.models.items():
                if not status.get("ok"):
                    logger.error(
                        "speech model for %r failed to load: %s", language, status.get("error")
                    )
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
            return

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

    def available_languages(self) -> list[str]:
        """Languages with a usable model (a failed load in the workers counts as unusable)."""
        with self._lock:
            loaded = dict(self._worker_models)
        return sorted(
            lang for lang in self._model_dirs if lang not in loaded or loaded[lang].get("ok", False)
        )

    def sample_rate(self, language: str) -> int:
        """The sample rate PCM for this language must have."""
        return self._facts[language].sample_rate

    def supports_grammar(self, language: str) -> bool:
        """Whether this language's model can be restricted to a grammar."""
        return self._facts[language].runtime_grammar

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

    def _take_worker(self, deadline: float) -> _Worker | None:
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

    def _replace(self, worker: _Worker, counter: str) -> None:
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
        except _WorkerCrashed:
            self._replace(worker, "crashes")
            return fail("closed" if self._closed else "worker_crashed")
        except _WorkerTimeout:
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
        facts: _ModelFacts | None,
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
        words = tuple(Word(*item) for item in payload.get("words", ()))
        heard = [w for w in words if w.word != "[unk]"]
        reason = None if heard else ("no_match" if words else "no_speech")
        return Recognition(
            text=" ".join(w.word for w in words),
            words=words,
            confidence=sum(w.conf for w in words) / len(words) if words else 0.0,
            mode=payload.get("mode", job.mode),
            model_name=name,
            processing_seconds=payload.get("processing_seconds", 0.0),
            audio_seconds=job.audio_seconds,
            ok=reason is None,
            reason=reason,
            language=job.language,
            dropped_words=dropped,
        )


@dataclass(frozen=True)
class _Job:
    """One request for a worker, prepared in the caller's thread."""

    language: str
    message: tuple[Any, ...]
    audio_seconds: float
    mode: str


def _failure_builder(job: _Job, facts: _ModelFacts | None) -> Callable[..., Recognition]:
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
    facts = _facts(language, model_dir)
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
    worker = _Worker(
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
    except _WorkerCrashed:
        report["error"] = "the worker died while loading the model"
        return report
    except _WorkerTimeout:
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
