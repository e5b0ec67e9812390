"""The Media Streams WebSocket: Twilio's `<Start><Stream>` audio for the live recogniser.

Waitress serves WSGI only, so `ivr serve` runs this `websockets` server (its sync API, one
thread per connection) on a second port, IVR_MEDIA_STREAM_PORT; behind a proxy the public
`wss://host/twilio/media` maps to it (docs/twilio-setup.md).

Messages as Twilio's "Media Streams - WebSocket Messages" page describes them: `connected`,
`start` (streamSid, callSid, customParameters, mediaFormat audio/x-mulaw 8000 Hz mono),
`media` (track, chunk, timestamp, base64 payload), `dtmf`, `mark`, `stop`. The token in
customParameters is checked once, at `start` (ivr.speech.live). Anything wrong closes the
socket with a log line carrying the CallSid; the call itself goes on (keys still work).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from ivr.calls import is_ascii_number
from ivr.speech.live import LiveSpeech, LiveStream, Refusal

log = logging.getLogger("ivr.media")

MEDIA_PATH = "/twilio/media"
POLICY_VIOLATION = 1008
MAX_MESSAGE_BYTES = 16 * 1024  # a 20 ms frame is ~300 bytes of JSON
MAX_PAYLOAD_BYTES = 1600  # 200 ms of μ-law: Twilio sends 20 ms
IDLE_SECONDS = 30.0  # Twilio sends a frame every 20 ms while the call lasts
MAX_STREAM_SECONDS = 15 * 60  # no prompt listens this long: a socket that never closes
BURST_SECONDS = 2.0  # audio a client may be ahead of real time (network jitter)
MULAW_BYTES_PER_SECOND = 8000
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
KNOWN_EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")


class MediaStreamServer:
    """The WebSocket server on its own port and thread."""

    def __init__(
        self, live: LiveSpeech, host: str = "127.0.0.1", port: int = 0, max_speedup: float = 1.0
    ) -> None:
        self.live = live
        # Twilio sends audio as it is spoken; a client faster than this (times real time,
        # plus a burst) is flooding. The emulator may stream faster (IVR_MEDIA_MAX_SPEEDUP).
        self.max_speedup = max_speedup
        self.server: Server = serve(
            self._handle, host, port, max_size=MAX_MESSAGE_BYTES, compression=None
        )
        self.port = self.server.socket.getsockname()[1]
        live.stream_port = self.port
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="ivr-media-socket", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Stop accepting and close open sockets."""
        self.server.shutdown()
        self.thread.join(5)

    # One connection --------------------------------------------------------------------

    def _handle(self, websocket: ServerConnection) -> None:
        path = websocket.request.path.split("?", 1)[0] if websocket.request else ""
        if not path.endswith(MEDIA_PATH):
            websocket.close(POLICY_VIOLATION, "not the media stream path")
            return
        session = _Session(self.live, websocket, self.max_speedup)
        try:
            session.run()
        except ConnectionClosed:
            pass
        finally:
            session.end()


class _Session:
    def __init__(self, live: LiveSpeech, websocket: ServerConnection, max_speedup: float) -> None:
        self.live, self.websocket = live, websocket
        self.stream: LiveStream | None = None
        self.call_sid = ""
        self.last_chunk = 0
        self.max_speedup = max_speedup
        self.opened = time.monotonic()
        self.started = 0.0  # when `start` came
        self.audio_bytes = 0

    def run(self) -> None:
        while True:
            if time.monotonic() - self.opened > MAX_STREAM_SECONDS:
                return self.refuse("stream open longer than any prompt listens")
            try:
                message = self.websocket.recv(timeout=IDLE_SECONDS)
            except TimeoutError:
                return self.refuse("no message for 30 s")
            if isinstance(message, bytes):
                return self.refuse("binary message")
            try:
                data = json.loads(message)
            except ValueError:
                return self.refuse("malformed JSON")
            if not isinstance(data, dict):
                return self.refuse("not a JSON object")
            event = data.get("event")
            if event not in KNOWN_EVENTS:
                return self.refuse(f"unknown event {str(event)[:32]!r}")
            if event == "start":
                if self.stream is not None:
                    return self.refuse("a second start")
                if not self.start(data):
                    return None
            elif event == "media":
                if self.stream is None:
                    return self.refuse("media before start")
                if not self.media(data):
                    return None
            elif event == "stop":
                self.websocket.close(1000, "stream stopped")
                return None
            # connected, dtmf (keys come to the <Gather>), mark: nothing to do

    def start(self, data: dict[str, Any]) -> bool:
        start = data.get("start")
        if not isinstance(start, dict):
            return self.refuse("start without its details")
        self.call_sid = str(start.get("callSid", ""))[:64]
        parameters = start.get("customParameters") or {}
        if not isinstance(parameters, dict):
            return self.refuse("customParameters is not an object")
        seq_text = str(parameters.get("seq", ""))
        if start.get("mediaFormat") != MEDIA_FORMAT:
            return self.refuse("media format is not 8 kHz μ-law mono")
        if not is_ascii_number(seq_text) or len(seq_text) > 9:
            return self.refuse("no seq parameter")
        try:
            self.stream = self.live.begin(
                self.call_sid,
                int(seq_text),
                str(parameters.get("token", "")),
                str(data.get("streamSid") or start.get("streamSid") or "")[:64],
            )
        except Refusal as refusal:
            return self.refuse(str(refusal))
        self.stream.close_socket = self._close_from_elsewhere
        self.started = time.monotonic()
        return True

    def media(self, data: dict[str, Any]) -> bool:
        media = data.get("media")
        if not isinstance(media, dict) or media.get("track", "inbound") != "inbound":
            return True  # another track: not ours to hear
        chunk = str(media.get("chunk", ""))
        if not is_ascii_number(chunk) or len(chunk) > 9:
            return self.refuse("media without a chunk number")
        if int(chunk) <= self.last_chunk:
            log.info(
                "duplicate or out-of-order media chunk dropped",
                extra={"call_sid": self.call_sid, "chunk": chunk},
            )
            return True
        self.last_chunk = int(chunk)
        payload = media.get("payload")
        if not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_BYTES * 2:
            return self.refuse("media payload missing or too long")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return self.refuse("media payload is not base64")
        self.audio_bytes += len(audio)
        allowed = BURST_SECONDS + (time.monotonic() - self.started) * self.max_speedup
        if self.audio_bytes / MULAW_BYTES_PER_SECOND > allowed:
            return self.refuse("media frames faster than real time")
        self.stream.feed(audio)
        return True

    def refuse(self, reason: str) -> bool:
        log.warning("media stream refused: %s", reason, extra={"call_sid": self.call_sid})
        self.websocket.close(POLICY_VIOLATION, reason[:120])
        return False

    def end(self) -> None:
        if self.stream is not None:
            self.live.forget(self.stream)

    def _close_from_elsewhere(self, code: int, reason: str) -> None:
        self.websocket.close(code, reason)
