"""Worker processes that run Kaldi, so a crash or a hang inside it costs one utterance.

vosk 0.3.45 segfaults on an empty grammar and aborts on some broken models; a decode may
hang. Each worker is a separate process with a pipe to the parent; it loads every
configured model once, at start-up, then answers requests until told to stop. The parent
notices a dead worker from its process sentinel and a hung one from a missed deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from ivr.speech.decoding import (
    StreamDecoder,
    decode_utterance,
    describe_vocabulary,
    load_model,
    vosk_module,
    warm_up,
)
from ivr.speech.recognition import model_sample_rate

logger = logging.getLogger("ivr.speech")

WORKER_NICENESS = 10
# Waiting for a worker to load its models: the big server models take minutes.
DEFAULT_LOAD_TIMEOUT = 300.0


def worker_main(conn: Connection, model_dirs: dict[str, str], log_level: int) -> None:
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
        vosk_module().SetLogLevel(log_level)
    except Exception as error:  # vosk missing or broken: report it, do not die
        models = {lang: {"ok": False, "error": f"vosk unavailable: {error}"} for lang in model_dirs}
    else:
        for language, model_dir in model_dirs.items():
            started = time.perf_counter()
            try:
                load_model(model_dir)
                warm_up(model_dir, model_sample_rate(model_dir))
            except Exception as error:
                models[language] = {"ok": False, "error": str(error)}
            else:
                models[language] = {"ok": True, "load_seconds": time.perf_counter() - started}
    conn.send(("ready", {"pid": os.getpid(), "models": models}))
    streams: dict[str, StreamDecoder] = {}
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
                reply: tuple[str, Any] = ("result", decode_utterance(*args))
            elif kind == "describe":
                reply = ("result", describe_vocabulary(*args))
            elif kind.startswith("stream_"):
                reply = ("stream", args[0], _stream_step(streams, kind, args))
            elif kind == "crash_for_test":
                os.abort()  # test hook: die the way a Kaldi crash does
            elif kind == "hang_for_test":
                time.sleep(args[0])  # test hook: a decode that never ends
                reply = ("result", {})
            else:
                reply = ("error", f"unknown request {kind!r}")
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
            if kind.startswith("stream_"):
                streams.pop(args[0], None)
                reply = ("stream", args[0], {"kind": "error", "error": failure})
            else:
                reply = ("error", failure)
        conn.send(reply)


def _stream_step(streams: dict[str, StreamDecoder], kind: str, args: list[Any]) -> dict[str, Any]:
    """One streaming request: open, audio, end (the final result) or close."""
    stream_id = args[0]
    if kind == "stream_open":
        streams[stream_id] = StreamDecoder(*args[1:])
        return streams[stream_id].opened()
    if kind == "stream_close":
        streams.pop(stream_id, None)
        return {"kind": "closed"}
    decoder = streams.get(stream_id)
    if decoder is None:
        return {"kind": "error", "error": "no such stream"}
    if kind == "stream_audio":
        return decoder.accept(args[1])
    if kind == "stream_end":
        del streams[stream_id]
        return decoder.finish()
    return {"kind": "error", "error": f"unknown request {kind!r}"}


# --- parent side ----------------------------------------------------------------------


class WorkerCrashed(Exception):
    """The worker process died."""


class WorkerTimeout(Exception):
    """The worker did not answer in time."""


class Worker:
    """One worker process and the pipe to it; used by one thread at a time."""

    def __init__(self, context: Any, model_dirs: dict[str, str], log_level: int, name: str) -> None:
        parent_end, child_end = context.Pipe()
        self.process = context.Process(
            target=worker_main,
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
            raise WorkerTimeout
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                raise WorkerCrashed from None
        raise WorkerCrashed

    def wait_ready(self, timeout: float) -> None:
        """Wait until the worker has loaded its models."""
        kind, payload = self._receive(timeout)
        if kind != "ready":
            raise WorkerCrashed
        self.models = payload["models"]

    def call(self, message: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
        """Send one request and wait for its answer."""
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            raise WorkerCrashed from None
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


def spawn_ready_worker(
    context: Any,
    model_dirs: dict[str, str],
    *,
    log_level: int,
    name: str,
    load_timeout: float,
    is_closed: Callable[[], bool],
    on_start_failure: Callable[[], None] = lambda: None,
) -> Worker | None:
    """Start a worker and wait for its models, retrying with back-off if it dies loading.

    Returns None when the owner closed meanwhile. Models that failed to load are logged;
    the worker still serves the others.
    """
    delay = 1.0
    while not is_closed():
        worker = Worker(context, model_dirs, log_level, name)
        try:
            worker.wait_ready(load_timeout)
        except (WorkerCrashed, WorkerTimeout) as error:
            worker.kill()
            on_start_failure()
            logger.error(
                "speech worker failed to start (%s); retrying in %.0f s",
                "crashed" if isinstance(error, WorkerCrashed) else "timed out",
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
        return worker
    return None
