"""Run the app on loopback in this process: for `ivr call`, `ivr simulate` and the tests."""

from __future__ import annotations

import secrets
import tempfile
import threading
from pathlib import Path

import waitress

from ivr import db as database
from ivr.demo import seed_demo_roster
from ivr.web.app import create_app
from ivr.web.media_socket import MediaStreamServer


class LocalServer:
    """The real app on the real WSGI server (waitress), on 127.0.0.1 and a free port."""

    def __init__(
        self,
        db_path: str | None = None,
        auth_token: str | None = None,
        threads: int = 16,
        demo_roster: bool = True,
        speech_engine=None,
        twilio_api=None,
        streaming_recognizer=None,
        **settings,
    ):
        self._tmp = None
        if db_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ivr-")
            db_path = str(Path(self._tmp.name) / "ivr.sqlite3")
        self.db_path = db_path
        self.auth_token = auth_token or secrets.token_hex(16)
        config = {
            "db_path": db_path,
            "auth_token": self.auth_token,
            "allow_simulated_time": True,
            "recording_hosts": ("127.0.0.1",),  # the emulator's media host
            **settings,
        }
        if config.get("vosk_models") and not config.get("account_sid"):
            # A deployment's account: speech needs one to download recordings. Emulated
            # calls to this server use it (EmulatedCall(account_sid=server.account_sid)).
            config["account_sid"] = "AC" + secrets.token_hex(16)
        self.account_sid = str(config.get("account_sid") or "")
        self.app = create_app(
            config,
            speech_engine=speech_engine,
            twilio_api=twilio_api,
            streaming_recognizer=streaming_recognizer,
        )
        if demo_roster:
            with database.connect(db_path) as db:
                seed_demo_roster(db)
        self.server = waitress.create_server(
            self.app,
            host="127.0.0.1",
            port=0,
            threads=threads,
            ident="ivr",
            # Oversized bodies get 413 from the headers alone, before waitress buffers them.
            max_request_body_size=self.app.extensions["ivr.settings"].max_request_bytes,
        )
        self.media_socket = None
        live = self.app.extensions.get("ivr.live")
        if live is not None:  # stream mode: the Media Streams WebSocket on its own port
            # The emulator may stream faster than real time (its time_scale): allow it here.
            speedup = max(10.0, self.app.extensions["ivr.settings"].media_max_speedup)
            self.media_socket = MediaStreamServer(live, "127.0.0.1", 0, max_speedup=speedup)
            live.base_url = live.base_url or self.base_url
        dispatcher = self.app.extensions["ivr.dispatcher"]
        dispatcher.base_url = dispatcher.base_url or self.base_url  # operators' legs' URLs
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.server.effective_port}"

    def close(self) -> None:
        """Stop serving (after the requests in flight) and remove the temporary database."""
        self.server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
        self.server.close()
        self.thread.join(5)
        if self.media_socket is not None:
            self.media_socket.close()
            self.app.extensions["ivr.live"].close()
        self.app.extensions["ivr.speech"].close()
        self.app.extensions["ivr.dispatcher"].close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
