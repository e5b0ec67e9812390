"""The in-process streaming back-end: Vosk worker processes, each stream pinned to one.

A worker decodes many streams, one request at a time, and answers every request, so the
parent always knows whether a worker is keeping up. Per worker the parent runs a sender
thread (feeding never blocks the socket thread; audio queued for one stream is sent as
one message) and a reader thread (answers routed to their stream). A worker that dies
fails its streams with reason "worker_crashed"; one that leaves a request unanswered for
``hang_timeout`` seconds is killed and its streams fail with "timeout". Either way a new
worker is started, and the calls go on with the keypad.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ivr.speech.recognition import (
    ModelFacts,
    ModelsInWorkers,
    Word,
    model_facts,
    normalise_grammar,
)
from ivr.speech.streaming import EndpointRules, EventHandler, Stream
from ivr.speech.workers import DEFAULT_LOAD_TIMEOUT, Worker, spawn_ready_worker

logger = logging.getLogger("ivr.speech")

DEFAULT_HANG_TIMEOUT = 5.0
_STOP = object()


class LocalStream(Stream):
    """A stream decoded by one worker process."""

    def __init__(self, owner: StreamWorker, stream_id: str, facts: ModelFacts, **kwargs: Any):
        super().__init__(target_rate=facts.sample_rate, backend="local", **kwargs)
        self.stream_id = stream_id
        self.worker = owner
        self.model_name = facts.name
        self.mode = "free"
        self.dropped: list[str] = []

    def _send_audio(self, pcm: bytes) -> None:
        if pcm:
            self.worker.post(("stream_audio", self.stream_id, pcm))

    def _send_end(self) -> None:
        self.worker.post(("stream_end", self.stream_id))

    def _release(self) -> None:
        self.worker.forget(self)

    def on_reply(self, reply: dict[str, Any]) -> None:
        """Handle the worker's answer to one of this stream's requests."""
        kind = reply.get("kind")
        if kind == "opened":
            self.mode = reply["mode"]
            self.dropped = list(reply.get("dropped") or ())
            if reply.get("grammar_error"):
                logger.error(
                    "speech grammar unusable for %r, decoding free speech: %s",
                    self.language,
                    reply["grammar_error"],
                    extra={"call_sid": self.call_sid},
                )
        elif kind == "partial":
            self._deliver_partial(reply["text"])
        elif kind == "endpoint":
            self._request_end("endpoint")
        elif kind == "final":
            self.worker.forget(self)
            self._deliver_final(
                [Word(*item) for item in reply["words"]],
                mode=reply["mode"],
                model_name=self.model_name,
                processing_seconds=reply["processing_seconds"],
                dropped_words=reply.get("dropped") or (),
            )
        elif kind == "error":
            logger.error(
                "speech decoder error for %r: %s",
                self.language,
                reply.get("error"),
                extra={"call_sid": self.call_sid},
            )
            self.worker.forget(self)
            self._deliver_failure("decoder_error")


class StreamWorker:
    """The parent's side of one worker process serving streams."""

    def __init__(self, worker: Worker, on_death: Any) -> None:
        self.worker = worker
        self.streams: dict[str, LocalStream] = {}
        self.lock = threading.Lock()
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.pending = 0  # requests sent and not answered yet
        self.last_progress = time.monotonic()
        self.death_reason: str | None = None
        self.alive = True
        self._on_death = on_death
        self._sender = threading.Thread(target=self._send_loop, name="ivr-stream-send", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="ivr-stream-read", daemon=True)
        self._sender.start()
        self._reader.start()

    @property
    def pid(self) -> int | None:
        """The worker's process id."""
        return self.worker.pid

    def post(self, message: tuple[Any, ...]) -> None:
        """Queue a request for the worker (never blocks)."""
        self.outbox.put(message)

    def attach(self, stream: LocalStream) -> None:
        """Pin a stream to this worker."""
        with self.lock:
            self.streams[stream.stream_id] = stream

    def forget(self, stream: LocalStream) -> None:
        """Unpin a stream; the worker drops its recogniser if it still has one."""
        with self.lock:
            known = self.streams.pop(stream.stream_id, None) is not None
        if known and self.alive:
            self.post(("stream_close", stream.stream_id))

    def load(self) -> int:
        """How many streams are pinned here."""
        with self.lock:
            return len(self.streams)

    def hung(self, timeout: float) -> bool:
        """True when a request has waited longer than the timeout without any answer."""
        with self.lock:
            waited = time.monotonic() - self.last_progress
            return self.alive and self.pending > 0 and waited > timeout

    def kill(self, reason: str) -> None:
        """End the process; the reader thread then fails its streams with this reason."""
        with self.lock:
            self.death_reason = self.death_reason or reason
        self.worker.process.kill()

    def stop(self) -> None:
        """Stop the process politely (closing)."""
        with self.lock:
            self.death_reason = self.death_reason or "closed"
        self.outbox.put(_STOP)
        self._sender.join(5)
        self.worker.stop()
        self._reader.join(5)

    def _send_loop(self) -> None:
        """Send queued requests, audio for the same stream merged into one message."""
        while True:
            batch = [self.outbox.get()]
            while True:
                try:
                    batch.append(self.outbox.get_nowait())
                except queue.Empty:
                    break
            for message in _merge_audio(batch):
                if message is _STOP:
                    return
                with self.lock:
                    if self.pending == 0:
                        self.last_progress = time.monotonic()
                    self.pending += 1
                try:
                    self.worker.conn.send(message)
                except (OSError, ValueError):
                    return  # the reader sees the death and fails the streams

    def _read_loop(self) -> None:
        """Route answers to their streams until the process ends."""
        from multiprocessing.connection import wait

        conn, sentinel = self.worker.conn, self.worker.process.sentinel
        while True:
            ready = wait([conn, sentinel])
            if conn in ready:
                try:
                    kind, *payload = conn.recv()
                except (EOFError, OSError):
                    break
                with self.lock:
                    self.pending = max(0, self.pending - 1)
                    self.last_progress = time.monotonic()
                    stream = self.streams.get(payload[0]) if kind == "stream" else None
                if stream is not None:
                    stream.on_reply(payload[1])
                continue
            break
        with self.lock:
            self.alive = False
            reason = self.death_reason or "worker_crashed"
            streams = list(self.streams.values())
            self.streams.clear()
        self.outbox.put(_STOP)
        for stream in streams:
            stream._deliver_failure(reason)
        self._on_death(self, reason)


def _merge_audio(batch: list[Any]) -> list[Any]:
    """Merge consecutive audio messages of one stream (order per stream is kept)."""
    merged: list[Any] = []
    last_audio: dict[str, int] = {}
    for message in batch:
        if message is not _STOP and message[0] == "stream_audio":
            index = last_audio.get(message[1])
            if index is not None:
                kind, stream_id, pcm = merged[index]
                merged[index] = (kind, stream_id, pcm + message[2])
                continue
            last_audio[message[1]] = len(merged)
        elif message is not _STOP and len(message) > 1:
            last_audio.pop(message[1], None)  # audio after an end must not jump ahead of it
        merged.append(message)
    return merged


class LocalStreamingRecognizer(ModelsInWorkers):
    """Streaming recognition in local worker processes (the default back-end)."""

    def __init__(
        self,
        models: Mapping[str, str | os.PathLike[str]],
        *,
        workers: int = 2,
        start_method: str = "spawn",
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        hang_timeout: float = DEFAULT_HANG_TIMEOUT,
        rules: EndpointRules | None = None,
        log_level: int = -1,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver'")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._context = multiprocessing.get_context(start_method)
        self._size = workers
        self._load_timeout = load_timeout
        self._hang_timeout = hang_timeout
        self._rules = rules or EndpointRules()
        self._log_level = log_level
        self._facts = {lang: model_facts(lang, path) for lang, path in models.items()}
        self._model_dirs = {
            lang: facts.model_dir for lang, facts in self._facts.items() if not facts.problem
        }
        self._lock = threading.Lock()
        self._workers: list[StreamWorker] = []
        self._worker_models: dict[str, dict[str, Any]] = {}
        self._counters = {
            "opened": 0,
            "started": 0,
            "crashes": 0,
            "timeouts": 0,
            "start_failures": 0,
        }
        self._ids = itertools.count(1)
        self._turn = itertools.count()
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="ivr-stream-watch", daemon=True)
        self._watchdog.start()
        for _ in range(workers if self._model_dirs else 0):
            self._start_worker()

    # -- the interface --

    def open_stream(
        self,
        call_sid: str,
        language: str,
        grammar: Sequence[str] | None = None,
        *,
        on_event: EventHandler | None = None,
        rules: EndpointRules | None = None,
    ) -> LocalStream:
        """Start one utterance on the least-loaded worker; grammar=None is free speech."""
        if self._closed:
            raise RuntimeError("streaming recogniser is closed")
        phrases = None if grammar is None else normalise_grammar(grammar)
        facts = self._facts.get(language)
        worker = self._least_loaded()
        stream_id = f"s{next(self._ids)}"
        if facts is None or facts.problem or language not in self.available_languages():
            return self._failed_stream(call_sid, language, phrases, on_event, rules, "no_model")
        if worker is None:
            return self._failed_stream(call_sid, language, phrases, on_event, rules, "busy")
        if phrases is not None and not facts.runtime_grammar:
            phrases = None  # a static graph takes no grammar: free speech, as in batch
        stream = LocalStream(
            worker,
            stream_id,
            facts,
            call_sid=call_sid,
            language=language,
            grammar=phrases,
            rules=rules or self._rules,
            on_event=on_event,
        )
        worker.attach(stream)
        worker.post(("stream_open", stream_id, facts.model_dir, facts.sample_rate, phrases))
        with self._lock:
            self._counters["opened"] += 1
        return stream

    def wait_until_ready(self, timeout: float = DEFAULT_LOAD_TIMEOUT) -> bool:
        """Block until every worker has loaded its models (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._workers) >= self._size or not self._model_dirs:
                    return True
            time.sleep(0.05)
        return False

    def health(self) -> dict[str, Any]:
        """Workers, their streams and the counters, for /healthz and /metrics."""
        with self._lock:
            workers = list(self._workers)
            counters = dict(self._counters)
            closed = self._closed
        return {
            "ok": not closed and bool(workers) and bool(self.available_languages()),
            "backend": "local",
            "closed": closed,
            "workers": {
                "configured": self._size,
                "alive": len(workers),
                "pids": [worker.pid for worker in workers],
                "streams": [worker.load() for worker in workers],
                **counters,
            },
            "languages": self.available_languages(),
        }

    def close(self) -> None:
        """Stop the workers; open streams fail with reason "closed"."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> LocalStreamingRecognizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- test hooks: deliberately break the worker a stream is pinned to --

    def _crash_worker_for_test(self, stream: LocalStream) -> None:
        """Test hook: the stream's worker aborts, as a Kaldi crash would."""
        stream.worker.post(("crash_for_test",))

    def _hang_worker_for_test(self, stream: LocalStream, seconds: float) -> None:
        """Test hook: the stream's worker stops answering, as a hung decode would."""
        stream.worker.post(("hang_for_test", seconds))

    # -- internals --

    def _failed_stream(self, call_sid, language, grammar, on_event, rules, reason) -> LocalStream:
        """A stream that has already failed (no model, no worker): the caller gets keys."""
        facts = self._facts.get(language) or model_facts(language, "/nonexistent")
        stream = LocalStream(
            _NO_WORKER,
            "none",
            facts,
            call_sid=call_sid,
            language=language,
            grammar=grammar,
            rules=rules or self._rules,
            on_event=on_event,
        )
        stream._deliver_failure(reason)
        return stream

    def _least_loaded(self) -> StreamWorker | None:
        """The living worker with the fewest streams (ties taken in turn)."""
        with self._lock:
            workers = [worker for worker in self._workers if worker.alive]
        if not workers:
            return None
        turn = next(self._turn)
        order = workers[turn % len(workers) :] + workers[: turn % len(workers)]
        return min(order, key=lambda worker: worker.load())

    def _start_worker(self) -> None:
        """Bring up one worker in the background."""
        threading.Thread(target=self._bring_up_worker, name="ivr-stream-start", daemon=True).start()

    def _bring_up_worker(self) -> None:
        worker = spawn_ready_worker(
            self._context,
            self._model_dirs,
            log_level=self._log_level,
            name="ivr-stream-worker",
            load_timeout=self._load_timeout,
            is_closed=lambda: self._closed,
            on_start_failure=lambda: self._count("start_failures"),
        )
        if worker is None:
            return
        with self._lock:
            closed = self._closed
            if not closed:
                self._workers.append(StreamWorker(worker, self._on_worker_death))
                self._worker_models = worker.models
                self._counters["started"] += 1
        if closed:
            worker.stop()

    def _on_worker_death(self, worker: StreamWorker, reason: str) -> None:
        """A worker ended: count it and start another, unless we are closing."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            closed = self._closed
        if closed or reason == "closed":
            return
        self._count("timeouts" if reason == "timeout" else "crashes")
        logger.error(
            "speech stream worker %s %s; starting a new one",
            worker.pid,
            "hung" if reason == "timeout" else "died",
        )
        worker.worker.kill()
        self._start_worker()

    def _watch(self) -> None:
        """Kill workers that stopped answering."""
        while not self._closed:
            time.sleep(min(0.25, self._hang_timeout / 4))
            with self._lock:
                workers = list(self._workers)
            for worker in workers:
                if worker.hung(self._hang_timeout):
                    worker.kill("timeout")

    def _count(self, counter: str) -> None:
        with self._lock:
            self._counters[counter] += 1


class _NoWorker:
    """Stands in for a worker behind a stream that failed before it started."""

    alive = False

    def post(self, message: tuple[Any, ...]) -> None:
        """Nothing to send to."""

    def forget(self, stream: LocalStream) -> None:
        """Nothing to forget."""


_NO_WORKER: Any = _NoWorker()
