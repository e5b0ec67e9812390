"""Media Streams as Twilio sends them, and the REST call update as Twilio applies it.

`MediaStream` is Twilio's side of one `<Start><Stream>` (the <Stream> page; the messages
from "Media Streams - WebSocket Messages"): it opens a WebSocket to the <Stream url>, sends
`connected`, `start` (accountSid, streamSid, callSid, tracks ["inbound"], customParameters
from the <Parameter> nouns, mediaFormat audio/x-mulaw 8000 Hz mono), then a `media` frame
every 20 ms in real time (scaled by the call's time_scale): the caller's audio when they
speak, silence (μ-law 0xFF) otherwise; `stop` when the call ends. The stream lasts until
the call ends, whatever TwiML runs meanwhile (the <Stream> page: <Start> forks the audio
while the call goes on).

`EmulatedRest` is a small stand-in for Twilio's REST Calls resource, passed to the app as
its `twilio_api`: `update_call(sid, url=...)` does what Twilio does on a call update with
Url — the live call stops its current verb and runs the TwiML fetched from the URL
("Modify calls in progress"). Like Twilio, the update is answered at once and applied
asynchronously.
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ivr.emulator.http import new_sid

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
FRAME_SECONDS = 0.02
MULAW_SILENCE = b"\xff"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@functools.lru_cache(maxsize=64)
def mulaw_audio(path: str) -> bytes:
    """A fixture as a phone line carries it: 8 kHz mono μ-law (ffmpeg; converted once)."""
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    done = subprocess.run(  # noqa: S603 - fixed argument list, our own fixture path
        ["ffmpeg", "-v", "error", "-i", path, "-ar", "8000", "-ac", "1", "-f", "mulaw", "-"],  # noqa: S607
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def is_loopback_ws(url: str) -> bool:
    """A ws:// URL to this machine (the emulator's explicit loopback switch allows these)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "ws" and (parts.hostname or "") in LOOPBACK_HOSTS


class MediaStream:
    """Twilio's side of one Media Stream: connect, start, 20 ms frames, stop."""

    def __init__(
        self,
        url: str,
        *,
        call_sid: str,
        account_sid: str,
        parameters: dict[str, str],
        time_scale: float = 1.0,
    ) -> None:
        self.url = url
        self.call_sid, self.account_sid = call_sid, account_sid
        self.stream_sid = new_sid("MZ")
        self.parameters = parameters
        self.time_scale = time_scale
        self.close_code: int | None = None
        self.close_reason = ""
        self.frames_sent = 0
        self._sequence = 0
        self._audio: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = threading.Event()
        self.socket = connect(url, open_timeout=5, compression=None)
        self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._send(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "accountSid": account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(parameters),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            },
            sequence_taken=True,
        )
        self._thread = threading.Thread(target=self._pump, name="emulated-stream", daemon=True)
        self._thread.start()

    @property
    def open(self) -> bool:
        """Whether the socket is still open (the service may close it)."""
        return self.close_code is None and not self._stopping.is_set()

    def say(self, mulaw: bytes) -> float:
        """Queue the caller's audio; returns its length in seconds."""
        with self._lock:
            for start in range(0, len(mulaw), FRAME_BYTES):
                frame = mulaw[start : start + FRAME_BYTES]
                self._audio.append(frame.ljust(FRAME_BYTES, MULAW_SILENCE))
            self._idle.clear()
        return len(mulaw) / 8000

    def wait_said(self, timeout: float | None = None) -> bool:
        """Wait until the queued audio has been sent."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        """The call ended: send `stop` and close."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._thread.join(2)
        if self.close_code is None:
            try:
                self._send(
                    {
                        "event": "stop",
                        "sequenceNumber": self._next_sequence(),
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                        "streamSid": self.stream_sid,
                    },
                    sequence_taken=True,
                )
            except ConnectionClosed:
                pass
        self.socket.close()
        self._note_close()

    # The 20 ms clock -------------------------------------------------------------------

    def _pump(self) -> None:
        started = time.monotonic()
        chunk = 0
        while not self._stopping.is_set():
            with self._lock:
                frame = self._audio.popleft() if self._audio else MULAW_SILENCE * FRAME_BYTES
                if not self._audio:
                    self._idle.set()
            chunk += 1
            try:
                self._send(
                    {
                        "event": "media",
                        "sequenceNumber": self._next_sequence(),
                        "media": {
                            "track": "inbound",
                            "chunk": str(chunk),
                            "timestamp": str((chunk - 1) * 20),
                            "payload": base64.b64encode(frame).decode(),
                        },
                        "streamSid": self.stream_sid,
                    },
                    sequence_taken=True,
                )
            except ConnectionClosed:
                self._note_close()
                self._idle.set()
                return
            self.frames_sent += 1
            # Real time: frame n leaves at n * 20 ms (scaled), whatever the sends cost.
            delay = started + chunk * FRAME_SECONDS * self.time_scale - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _send(self, message: dict[str, Any], sequence_taken: bool = False) -> None:
        self.socket.send(json.dumps(message))

    def _note_close(self) -> None:
        if self.close_code is None:
            received = self.socket.protocol.close_rcvd
            self.close_code = received.code if received is not None else 1006
            self.close_reason = received.reason if received is not None else ""


class EmulatedRest:
    """Twilio's REST call update for emulated calls: a faithful stand-in for the boundary."""

    def __init__(self) -> None:
        self._calls: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.updates: list[dict[str, Any]] = []

    def register(self, call: Any) -> None:
        """An emulated call the service may update."""
        with self._lock:
            self._calls[call.result.call_sid] = call

    def update_call(
        self, sid: str, *, url: str | None = None, twiml: str | None = None, status=None
    ) -> None:
        """Twilio's call update: answered at once, applied to the live call asynchronously."""
        with self._lock:
            call = self._calls.get(sid)
            self.updates.append({"sid": sid, "url": url, "twiml": twiml, "status": status})
        if call is None or call.result.ended:
            raise LookupError(f"no live call {sid}")  # Twilio: 404 / 21220 not in progress
        if url:
            threading.Thread(target=call.redirect, args=(url,), daemon=True).start()
        elif status in ("completed", "canceled"):
            threading.Thread(target=call.hang_up, daemon=True).start()
