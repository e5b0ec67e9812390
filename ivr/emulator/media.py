"""Twilio's media host, played on loopback: recordings served (and deleted) as Twilio does."""

from __future__ import annotations

import base64
import io
import secrets
import subprocess
import threading
import urllib.parse
import wave
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ivr.emulator.http import API_VERSION, new_sid


@dataclass
class Recording:
    """One recording as Twilio's media host holds it."""

    sid: str
    account_sid: str
    data: bytes
    content_type: str
    duration: int
    not_ready_fetches: int = 0
    fetches: int = 0


class MediaServer:
    """Serves recordings over HTTP on loopback like api.twilio.com's Recordings resource.

    `RecordingUrl` (no extension) and `RecordingUrl.wav` return the WAV, `.mp3` an MP3
    (transcoded with ffmpeg). A recording can answer 404 for its first N fetches, as
    Twilio does while a recording is still being processed. With credentials set, the
    host wants HTTP basic auth (AccountSid:AuthToken), as with Twilio's "HTTP auth for
    media" setting. A DELETE of `RecordingUrl.json` removes the recording (204), as
    Twilio's Recording resource does.
    """

    def __init__(self, credentials: tuple[str, str] | None = None):
        self.recordings: dict[str, Recording] = {}
        self.requests: list[tuple[str, int]] = []
        self.credentials = credentials
        self._lock = threading.Lock()
        media = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                status, body, content_type = media.fetch(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_DELETE(self):  # noqa: N802 - http.server's naming
                status = media.delete(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep test output quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(
        self, account_sid: str, path: Path, not_ready_fetches: int = 0
    ) -> tuple[str, Recording]:
        """Host an audio file as a new recording; returns (RecordingUrl, recording)."""
        data = path.read_bytes()
        sid = new_sid("RE")
        recording = Recording(
            sid=sid,
            account_sid=account_sid,
            data=data,
            content_type="audio/mpeg" if path.suffix.lower() == ".mp3" else "audio/x-wav",
            duration=audio_duration(path),
            not_ready_fetches=not_ready_fetches,
        )
        with self._lock:
            self.recordings[sid] = recording
        return f"{self.base_url}/{API_VERSION}/Accounts/{account_sid}/Recordings/{sid}", recording

    def add_silence(self, account_sid: str, seconds: float = 0.0) -> tuple[str, Recording]:
        """Host a silent recording (Twilio saves those too); its duration is whole seconds."""
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as audio:
            audio.setnchannels(1)
            audio.setsampwidth(2)
            audio.setframerate(8000)
            audio.writeframes(b"\x00\x00" * int(8000 * seconds))
        sid = new_sid("RE")
        recording = Recording(
            sid=sid,
            account_sid=account_sid,
            data=buffer.getvalue(),
            content_type="audio/x-wav",
            duration=int(seconds),
        )
        with self._lock:
            self.recordings[sid] = recording
        return f"{self.base_url}/{API_VERSION}/Accounts/{account_sid}/Recordings/{sid}", recording

    def fetch(self, path: str, headers) -> tuple[int, bytes, str]:
        """Answer one GET for a recording."""
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        sid, extension = (parts[-1].split(".", 1) + [""])[:2] if parts else ("", "")
        with self._lock:
            recording = self.recordings.get(sid)
            self.requests.append((path, 0))
            if recording is None or parts[:2] != [API_VERSION, "Accounts"]:
                return 404, b'{"status": 404, "message": "not found"}', "application/json"
            if self.credentials and not self._authorised(headers):
                return 401, b'{"status": 401, "message": "auth required"}', "application/json"
            recording.fetches += 1
            if recording.fetches <= recording.not_ready_fetches:
                return 404, b'{"status": 404, "message": "not ready"}', "application/json"
        if extension in ("", "wav"):
            if recording.content_type == "audio/x-wav":
                return 200, recording.data, "audio/x-wav"
            return 200, transcode(recording.data, "wav"), "audio/x-wav"
        if extension == "mp3":
            if recording.content_type == "audio/mpeg":
                return 200, recording.data, "audio/mpeg"
            return 200, transcode(recording.data, "mp3"), "audio/mpeg"
        return 404, b'{"status": 404}', "application/json"

    def delete(self, path: str, headers) -> int:
        """Answer one DELETE of a Recording resource (`.../Recordings/RE....json`), as Twilio."""
        parts = urllib.parse.urlsplit(path).path.strip("/").split("/")
        sid, extension = (parts[-1].split(".", 1) + [""])[:2]
        with self._lock:
            self.requests.append((path, 0))
            recording = self.recordings.get(sid)
            if (
                recording is None
                or extension != "json"
                or parts[:-1] != [API_VERSION, "Accounts", recording.account_sid, "Recordings"]
            ):
                return 404
            if self.credentials and not self._authorised(headers):
                return 401
            del self.recordings[sid]
        return 204

    def _authorised(self, headers) -> bool:
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return secrets.compare_digest(headers.get("Authorization", ""), expected)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def audio_duration(path: Path) -> int:
    """Whole seconds of audio (WAV from its header; anything else via ffprobe)."""
    try:
        with wave.open(str(path), "rb") as audio:
            return max(1, round(audio.getnframes() / audio.getframerate()))
    except (wave.Error, EOFError, ZeroDivisionError):
        pass
    try:
        output = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
        return max(1, round(float(output)))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 1


def transcode(data: bytes, target: str) -> bytes:
    """Convert audio bytes to WAV or MP3 with ffmpeg (as Twilio serves either)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", target, "pipe:1"],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.stdout
