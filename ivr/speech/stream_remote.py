"""The vosk-server streaming back-end: IVR_VOSK_SERVER_URLS=ws://host:2700,...

Each stream is one WebSocket connection speaking the established vosk-server protocol
(alphacep/vosk-server, websocket/asr_server.py): a config message
``{"config": {"sample_rate": 8000, "words": 1, "phrase_list": [...]}}``, binary s16le
audio (each message answered with one partial or result JSON), then ``{"eof" : 1}``,
answered with the final result. A URL may be restricted to languages: ``ru=ws://a:2700``
serves Russian only; a bare URL serves every configured language (one server, one model).

Streams go to the least-busy healthy server (ties in turn). A server that drops the
connection, refuses it, or leaves audio unanswered for ``stall_timeout`` seconds is
marked down for ``retry_after`` seconds, and the stream moves to another server, which is
sent the utterance's audio so far before the live audio continues. With no server left
the stream fails with reason "servers_unavailable" (the caller gets the keypad).

Audio goes at 8 kHz (Twilio's rate, ``sample_rate``) unless told otherwise: the server's
Kaldi resamples it once to its model's rate, as it does for every telephony client. The
grammar is sent as ``phrase_list`` with "[unk]" added, so sounds outside it can stay
unknown; words a model lacks are ignored by Vosk (logged on the server).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ivr.speech.decoding import words_of
from ivr.speech.recognition import Word, normalise_grammar
from ivr.speech.streaming import TWILIO_SAMPLE_RATE, EndpointRules, EventHandler, Stream

logger = logging.getLogger("ivr.speech")

EOF_MESSAGE = '{"eof" : 1}'  # asr_server.py compares the text exactly
# Audio that queued up (a replay after a fail-over) goes in pieces this long, so that each
# answer comes back well within the stall timeout.
REPLAY_CHUNK_SECONDS = 0.25


def parse_server_urls(value: str | Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Parse "ws://a:2700, ru=ws://b:2700" into (url, languages) pairs (() = any language)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    servers = []
    for item in (item.strip() for item in items):
        if not item:
            continue
        languages: tuple[str, ...] = ()
        if "=" in item.split("://", 1)[0]:
            prefix, item = item.split("=", 1)
            languages = tuple(lang.strip() for lang in prefix.split("+") if lang.strip())
        if not item.startswith(("ws://", "wss://")):
            raise ValueError(f"not a WebSocket URL: {item!r}")
        servers.append((item, languages))
    return servers


class _ServerFailed(Exception):
    """The server dropped, refused or stalled the stream."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class ServerState:
    """One vosk-server as this process sees it."""

    url: str
    languages: tuple[str, ...]
    active: int = 0
    opened: int = 0
    completed: int = 0
    drops: int = 0
    stalls: int = 0
    connect_errors: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    down_until: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def serves(self, language: str) -> bool:
        """Whether streams in this language may go here."""
        return not self.languages or language in self.languages

    def up(self, now: float) -> bool:
        """Not in the back-off that follows a failure."""
        return now >= self.down_until

    def report(self, now: float) -> dict[str, Any]:
        """Plain data for /healthz and /metrics."""
        return {
            "url": self.url,
            "languages": list(self.languages),
            "state": "up" if self.up(now) else "down",
            "active_streams": self.active,
            "streams": self.opened,
            "completed": self.completed,
            "drops": self.drops,
            "stalls": self.stalls,
            "connect_errors": self.connect_errors,
            "last_error": self.last_error,
            "seconds_since_error": (
                None if self.last_error_at is None else round(now - self.last_error_at, 1)
            ),
        }


class RemoteStream(Stream):
    """A stream decoded by vosk-server, moved to another server if its server fails."""

    def __init__(self, owner: RemoteStreamingRecognizer, **kwargs: Any) -> None:
        super().__init__(target_rate=owner.sample_rate, backend="vosk-server", **kwargs)
        self._owner = owner
        self.chunks: list[bytes] = []  # the utterance so far, at the sending rate
        self.end_wanted = False
        self.wake: asyncio.Event | None = None  # set in the loop
        self.task: asyncio.Task[None] | None = None

    def _send_audio(self, pcm: bytes) -> None:
        if pcm:
            self.chunks.append(pcm)
            self._owner.poke(self)

    def _send_end(self) -> None:
        self.end_wanted = True
        self._owner.poke(self)

    def _release(self) -> None:
        self._owner.cancel(self)


class RemoteStreamingRecognizer:
    """Streaming recognition on vosk-server machines, with fail-over between them."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        languages: Sequence[str] | None = None,
        sample_rate: int = TWILIO_SAMPLE_RATE,
        connect_timeout: float = 2.0,
        stall_timeout: float = 3.0,
        retry_after: float = 10.0,
        rules: EndpointRules | None = None,
    ) -> None:
        parsed = parse_server_urls(urls)
        if not parsed:
            raise ValueError("no vosk-server URL given")
        self.sample_rate = sample_rate
        self._languages = tuple(languages or ())
        self._servers = [ServerState(url, langs) for url, langs in parsed]
        self._connect_timeout = connect_timeout
        self._stall_timeout = stall_timeout
        self._retry_after = retry_after
        self._rules = rules or EndpointRules()
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._counters = {"opened": 0, "failovers": 0, "failed": 0}
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ivr-vosk-client")
        self._thread.daemon = True
        self._thread.start()

    # -- the interface --

    def open_stream(
        self,
        call_sid: str,
        language: str,
        grammar: Sequence[str] | None = None,
        *,
        on_event: EventHandler | None = None,
        rules: EndpointRules | None = None,
    ) -> RemoteStream:
        """Start one utterance on the least-busy server for the language."""
        if self._closed:
            raise RuntimeError("streaming recogniser is closed")
        phrases = None if grammar is None else normalise_grammar(grammar)
        stream = RemoteStream(
            self,
            call_sid=call_sid,
            language=language,
            grammar=phrases,
            rules=rules or self._rules,
            on_event=on_event,
        )
        with self._lock:
            self._counters["opened"] += 1
        if language not in self.available_languages():
            stream._deliver_failure("no_model")
            return stream
        future = asyncio.run_coroutine_threadsafe(self._start(stream), self._loop)
        future.result(5)  # the task exists before any audio arrives
        return stream

    def available_languages(self) -> list[str]:
        """Languages some server is configured for."""
        named = {lang for server in self._servers for lang in server.languages}
        if any(not server.languages for server in self._servers):
            named |= set(self._languages)
        return sorted(named)

    def supports_grammar(self, language: str) -> bool:
        """Servers are expected to run small models (runtime grammars); free otherwise."""
        return True

    def health(self) -> dict[str, Any]:
        """Each server's state and counts, for /healthz and /metrics."""
        now = time.monotonic()
        with self._lock:
            servers = [server.report(now) for server in self._servers]
            counters = dict(self._counters)
        return {
            "ok": not self._closed and any(server["state"] == "up" for server in servers),
            "backend": "vosk-server",
            "closed": self._closed,
            "servers": servers,
            "languages": self.available_languages(),
            **counters,
        }

    def close(self) -> None:
        """Close every stream's connection and stop the client thread."""
        if self._closed:
            return
        self._closed = True

        async def stop_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop_all(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> RemoteStreamingRecognizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- called by streams (any thread) --

    def poke(self, stream: RemoteStream) -> None:
        """Wake the stream's sender: new audio or the end."""
        if stream.wake is not None and not self._closed:
            self._loop.call_soon_threadsafe(stream.wake.set)

    def cancel(self, stream: RemoteStream) -> None:
        """Stop the stream's task (its connection closes)."""
        if stream.task is not None and not self._closed:
            self._loop.call_soon_threadsafe(stream.task.cancel)

    # -- in the event loop --

    async def _start(self, stream: RemoteStream) -> None:
        stream.wake = asyncio.Event()
        stream.task = asyncio.create_task(self._run(stream))

    def _choose(self, language: str, tried: set[str]) -> ServerState | None:
        """The least-busy server for the language not tried yet; healthy ones first."""
        now = time.monotonic()
        with self._lock:
            candidates = [s for s in self._servers if s.serves(language) and s.url not in tried]
            if not candidates:
                return None
            turn = next(self._turn) % len(candidates)
            candidates = candidates[turn:] + candidates[:turn]
            server = min(candidates, key=lambda s: (not s.up(now), s.active, s.down_until))
            server.active += 1
            server.opened += 1
            return server

    async def _run(self, stream: RemoteStream) -> None:
        """Decode the stream on one server after another until one gives the final result."""
        tried: set[str] = set()
        try:
            while not stream.done:
                server = self._choose(stream.language, tried)
                if server is None:
                    with self._lock:
                        self._counters["failed"] += 1
                    stream._deliver_failure("servers_unavailable")
                    return
                tried.add(server.url)
                stream.backend = server.url
                try:
                    await self._serve(server, stream)
                except _ServerFailed as failure:
                    self._note_failure(server, failure)
                    if not stream.done:
                        stream.failovers += 1
                        with self._lock:
                            self._counters["failovers"] += 1
                        logger.warning(
                            "vosk-server %s failed (%s); moving the stream on",
                            server.url,
                            failure,
                            extra={"call_sid": stream.call_sid},
                        )
                else:
                    with self._lock:
                        server.completed += 1
                        server.consecutive_failures = 0
                finally:
                    with self._lock:
                        server.active -= 1
        except asyncio.CancelledError:
            stream._deliver_failure("closed")
            raise
        except Exception:  # noqa: BLE001 - every stream must end with a result
            logger.exception("vosk-server stream failed", extra={"call_sid": stream.call_sid})
            stream._deliver_failure("internal_error")

    def _note_failure(self, server: ServerState, failure: _ServerFailed) -> None:
        """Count the failure and keep new streams away from the server for a while."""
        now = time.monotonic()
        with self._lock:
            setattr(server, failure.kind, getattr(server, failure.kind) + 1)
            server.consecutive_failures += 1
            server.last_error = str(failure)
            server.last_error_at = now
            server.down_until = now + self._retry_after

    async def _serve(self, server: ServerState, stream: RemoteStream) -> None:
        """One connection: config, the audio so far and as it comes, eof, the final result."""
        try:
            websocket = await asyncio.wait_for(
                connect(
                    server.url,
                    open_timeout=None,
                    ping_interval=None,
                    close_timeout=1.0,
                    max_size=2**22,
                ),
                self._connect_timeout,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as error:
            raise _ServerFailed("connect_errors", f"{type(error).__name__}: {error}") from None
        try:
            config: dict[str, Any] = {"sample_rate": self.sample_rate, "words": 1}
            if stream.grammar is not None:
                config["phrase_list"] = [*stream.grammar, "[unk]"]
            state = _Exchange()
            try:
                await websocket.send(json.dumps({"config": config}, ensure_ascii=False))
                receiver = asyncio.create_task(self._receive(websocket, stream, state))
                try:
                    await self._send(websocket, stream, state, receiver)
                finally:
                    receiver.cancel()
                    await asyncio.gather(receiver, return_exceptions=True)
            except ConnectionClosed as error:
                raise _ServerFailed("drops", f"connection lost ({error})") from None
            except (ValueError, KeyError, TypeError) as error:  # not vosk-server's JSON
                raise _ServerFailed("drops", f"bad answer: {error}") from None
        except BaseException:
            websocket.transport.abort()  # a failed server gets no polite close to wait for
            raise
        await websocket.close()

    async def _send(self, websocket: Any, stream: RemoteStream, state: _Exchange, receiver) -> None:
        """Send audio as it arrives (replaying what came before), then eof; watch for stalls."""
        assert stream.wake is not None
        position = 0
        while not receiver.done():
            stream.wake.clear()
            available = len(stream.chunks)
            if position < available:
                data = b"".join(stream.chunks[position:available])
                position = available
                piece = 2 * int(self.sample_rate * REPLAY_CHUNK_SECONDS)
                for offset in range(0, len(data), piece):
                    await self._send_message(websocket, state, data[offset : offset + piece])
            if stream.end_wanted and not state.eof_sent and position == len(stream.chunks):
                state.eof_sent = True
                await self._send_message(websocket, state, EOF_MESSAGE)
            if state.stalled(self._stall_timeout):
                raise _ServerFailed("stalls", f"no answer for {self._stall_timeout:g} s")
            try:
                await asyncio.wait_for(stream.wake.wait(), 0.1)
            except TimeoutError:
                pass
        error = receiver.exception()
        if error is not None:
            raise error

    async def _send_message(self, websocket: Any, state: _Exchange, message: str | bytes) -> None:
        """Send one message; a server that stopped reading counts as stalled."""
        state.note_sent()
        try:
            await asyncio.wait_for(websocket.send(message), self._stall_timeout)
        except TimeoutError:
            raise _ServerFailed("stalls", "the server stopped reading") from None

    async def _receive(self, websocket: Any, stream: RemoteStream, state: _Exchange) -> None:
        """Read the server's answers until the final one."""
        async for message in websocket:
            state.note_answer()
            data = json.loads(message)
            if "partial" in data:
                stream._deliver_partial(data["partial"])
                continue
            words = words_of(data)
            state.words.extend(words)
            if state.eof_sent and state.answered >= state.sent:
                stream._deliver_final(
                    [Word(*item) for item in state.words],
                    mode="free" if stream.grammar is None else "grammar",
                    model_name=stream.backend,
                    processing_seconds=state.busy_seconds(),
                    backend=stream.backend,
                )
                return
            if words:
                stream._request_end("endpoint")
        if not stream.done:
            raise ConnectionClosed(None, None)


class _Exchange:
    """Counts for one connection: messages sent and answered, words so far."""

    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.eof_sent = False
        self.started = time.monotonic()
        self.pending_since = self.started
        self.words: list[tuple[str, float, float, float]] = []

    def note_sent(self) -> None:
        """A message went out (the stall clock starts if nothing was pending)."""
        if self.sent == self.answered:
            self.pending_since = time.monotonic()
        self.sent += 1

    def note_answer(self) -> None:
        """An answer came in: the server is making progress."""
        self.answered += 1
        self.pending_since = time.monotonic()

    def stalled(self, timeout: float) -> bool:
        """True when a message has waited longer than the timeout for any answer."""
        return self.sent > self.answered and time.monotonic() - self.pending_since > timeout

    def busy_seconds(self) -> float:
        """Seconds the connection was open (the server's CPU time is not visible here)."""
        return time.monotonic() - self.started


def build_remote_recognizer(
    urls: str | Sequence[str], models: Mapping[str, str] | None = None, **kwargs: Any
) -> RemoteStreamingRecognizer:
    """A remote recogniser for the configured languages (the model folders are not used)."""
    return RemoteStreamingRecognizer(urls, languages=sorted(models or {}) or None, **kwargs)
