"""Recording downloads against real HTTP servers on loopback, with real files in tmp_path."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ivr import db as database
from ivr.config import ConfigError, Settings, load_settings
from ivr.db import calls as call_store
from ivr.emulator import API_VERSION, MediaServer, new_sid
from ivr.speech.recordings import (
    AllowedHost,
    RecordingFetcher,
    is_canonical_host,
    purge,
    recording_path,
)

AUDIO_DIR = Path(__file__).parent / "fixtures" / "audio"
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
OTHER_ACCOUNT_SID = "ACfedcba9876543210fedcba9876543210"
AUTH_TOKEN = "recordings-test-token-0123456789"
DELAYS = (0.5, 1.0, 2.0, 4.0)
BASIC_AUTH = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


def files_under(root: Path) -> list[Path]:
    """Every file below root (temp files included)."""
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def host_of(base_url: str) -> str:
    """'http://127.0.0.1:PORT' -> '127.0.0.1:PORT'."""
    return base_url.split("://", 1)[1]


class ScriptedServer:
    """A loopback HTTP server whose every request is answered by a test's function."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None], host="127.0.0.1"):
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests.append((self.command, self.path, self.headers.get("Authorization")))
                answer(self)

            do_DELETE = do_GET  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def base_url(self) -> str:
        """http://HOST:PORT"""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def recording_url(self, sid: str) -> str:
        """A Twilio-shaped RecordingUrl on this server."""
        return f"{self.base_url}/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def answer_with(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    """An answer function: one status, body and headers (Content-Length unless given)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in all_headers.items():
            if value is not None:
                handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


@pytest.fixture(scope="module")
def shared_media() -> Iterator[MediaServer]:
    # One server per module: stopping one takes up to its 0.5 s poll interval.
    server = MediaServer(credentials=(ACCOUNT_SID, AUTH_TOKEN))
    yield server
    server.close()


@pytest.fixture
def media(shared_media) -> MediaServer:
    """The media host, emptied: no recordings, no requests seen."""
    shared_media.recordings.clear()
    shared_media.requests.clear()
    return shared_media


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answer, host="127.0.0.1") -> ScriptedServer:
        servers.append(ScriptedServer(answer, host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def recordings_dir(tmp_path) -> Path:
    return tmp_path / "recordings"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_fetcher(recordings_dir, sleeps):
    """A fetcher for the given hosts that records its sleeps instead of sleeping."""

    def make(*hosts: str, **options) -> RecordingFetcher:
        settings = {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "recordings_dir": recordings_dir,
            "retry_delays": DELAYS,
            "sleep": sleeps.append,
            **options,
        }
        return RecordingFetcher(allowed_hosts=hosts, **settings)

    return make


@pytest.fixture
def call_sid() -> str:
    return new_sid("CA")


# Downloads -------------------------------------------------------------------------------


def test_fetch_stores_the_wav_in_the_calls_folder(media, make_fetcher, recordings_dir, call_sid):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    result = make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid)

    expected = recordings_dir / call_sid / f"{recording.sid}.wav"
    assert result.ok and result.reason is None
    assert result.path == expected
    assert expected.read_bytes() == (AUDIO_DIR / "ru_yes.wav").read_bytes()
    assert result.bytes == expected.stat().st_size
    assert result.content_type == "audio/x-wav"
    assert result.attempts == 1
    assert [path for path, _ in media.requests] == [url.removeprefix(media.base_url) + ".wav"]
    assert files_under(recordings_dir) == [expected]  # no temp file left beside it
    assert expected.stat().st_mode & 0o777 == 0o600  # callers' voices: owner only


def test_fetch_twice_replaces_the_file(media, make_fetcher, call_sid):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_no.wav")
    fetcher = make_fetcher(host_of(media.base_url))

    first = fetcher.fetch(url, call_sid, recording.sid)
    second = fetcher.fetch(url, call_sid, recording.sid)

    assert first.ok and second.ok and first.path == second.path
    assert second.path.read_bytes() == (AUDIO_DIR / "ru_no.wav").read_bytes()


def test_basic_auth_is_sent_and_a_wrong_token_is_refused(
    media, make_fetcher, recordings_dir, call_sid, sleeps
):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    wrong = make_fetcher(host_of(media.base_url), auth_token="not-the-token")
    refused = wrong.fetch(url, call_sid, recording.sid)
    right = make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid)

    assert (refused.ok, refused.reason, refused.detail) == (False, "http_error", "HTTP 401")
    assert refused.attempts == 1 and sleeps == []  # a 401 is not worth retrying
    assert right.ok  # the media host wants AccountSid:AuthToken, so it was sent
    assert files_under(recordings_dir) == [right.path]


def test_authorization_header_carries_account_sid_and_token(scripted, make_fetcher, call_sid):
    server = scripted(answer_with(200, b"RIFF....WAVE", {"Content-Type": "audio/x-wav"}))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url)).fetch(server.recording_url(sid), call_sid, sid)

    assert result.ok
    [(_, path, authorization)] = server.requests
    assert path.endswith(f"/Recordings/{sid}.wav")
    assert authorization == BASIC_AUTH


def test_not_yet_available_404s_are_retried_with_backoff(media, make_fetcher, call_sid, sleeps):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav", not_ready_fetches=3)

    result = make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid)

    assert result.ok and result.attempts == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert result.path.read_bytes() == (AUDIO_DIR / "ru_yes.wav").read_bytes()


def test_404_forever_gives_up_as_not_found(media, make_fetcher, recordings_dir, call_sid, sleeps):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav", not_ready_fetches=100)

    result = make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid)

    assert (result.ok, result.reason, result.path) == (False, "not_found", None)
    assert result.attempts == 5 and recording.fetches == 5
    assert sleeps == list(DELAYS)
    assert files_under(recordings_dir) == []


@pytest.mark.parametrize(
    ("status", "retried"), [(500, True), (503, True), (429, True), (403, False)]
)
def test_server_errors_are_retried_but_refusals_are_not(
    scripted, make_fetcher, call_sid, sleeps, status, retried
):
    answers = iter([answer_with(status), answer_with(200, b"RIFF....WAVE")])
    server = scripted(lambda handler: next(answers)(handler))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url)).fetch(server.recording_url(sid), call_sid, sid)

    if retried:
        assert result.ok and result.attempts == 2 and sleeps == [0.5]
    else:
        assert (result.reason, result.attempts, sleeps) == ("http_error", 1, [])


def test_retry_delays_are_configurable_and_bounded(media, make_fetcher, call_sid, sleeps):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav", not_ready_fetches=100)

    result = make_fetcher(host_of(media.base_url), retry_delays=(0.1,)).fetch(
        url, call_sid, recording.sid
    )

    assert (result.reason, result.attempts, sleeps) == ("not_found", 2, [0.1])
    with pytest.raises(ValueError, match="add up"):
        make_fetcher("api.twilio.com", retry_delays=(30, 30, 30))
    with pytest.raises(ValueError, match="negative"):
        make_fetcher("api.twilio.com", retry_delays=(-1,))


def test_real_sleep_is_the_default(media, recordings_dir, call_sid):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav", not_ready_fetches=1)
    fetcher = RecordingFetcher(
        [host_of(media.base_url)], ACCOUNT_SID, AUTH_TOKEN, recordings_dir, retry_delays=(0.05,)
    )

    started = time.monotonic()
    result = fetcher.fetch(url, call_sid, recording.sid)

    assert result.ok and result.attempts == 2
    assert time.monotonic() - started >= 0.05


def test_proxies_from_the_environment_are_not_used(media, make_fetcher, call_sid, monkeypatch):
    # The credentials go straight to the media host, never through a proxy set in the env.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    assert make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid).ok


# What may be fetched ---------------------------------------------------------------------


def test_host_not_in_the_allow_list_is_never_asked(media, make_fetcher, recordings_dir, call_sid):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    for allowed in ("api.twilio.com", "127.0.0.1:1", "localhost"):
        result = make_fetcher(allowed).fetch(url, call_sid, recording.sid)
        assert (result.ok, result.reason, result.attempts) == (False, "not_allowed", 0)

    assert media.requests == []
    assert files_under(recordings_dir) == []


def test_an_allowed_host_without_a_port_allows_any_port(media, make_fetcher, call_sid):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    assert make_fetcher("127.0.0.1").fetch(url, call_sid, recording.sid).ok


def test_https_is_required_beyond_loopback(make_fetcher, call_sid):
    sid = new_sid("RE")
    url = f"http://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}"

    result = make_fetcher("api.twilio.com").fetch(url, call_sid, sid)

    assert result.reason == "not_allowed" and "https" in result.detail


REFUSED_URLS = {
    "user info": "http://user:secret@{host}{path}",
    "user info hiding the host": "http://{host}@evil.example{path}",
    "empty user info": "http://@{host}{path}",
    "file scheme": "file:///etc/passwd",
    "ftp scheme": "ftp://{host}{path}",
    "gopher scheme": "gopher://{host}{path}",
    "no scheme": "//{host}{path}",
    "relative": "{path}",
    "javascript": "javascript:alert(1)",
    "decimal IP": "http://2130706433:{port}{path}",
    "short IP": "http://127.1:{port}{path}",
    "hex IP": "http://0x7f.0.0.1:{port}{path}",
    "octal IP": "http://0177.0.0.1:{port}{path}",
    "IPv4-mapped IPv6": "http://[::ffff:127.0.0.1]:{port}{path}",
    "trailing dot": "http://localhost.:{port}{path}",
    "query": "http://{host}{path}?redirect=http://evil.example/",
    "fragment": "http://{host}{path}#x",
    "bad port": "http://{host}:99999{path}",
    "backslash": "http://{host}\\@evil.example{path}",
    "header injection": "http://{host}{path}\r\nX-Injected: 1",
    "space": "http://{host}{path} ",
    "non-ASCII host": "http://ехх.example{path}",
    "dot segments": "http://{host}/{version}/Accounts/{account}/Recordings/../../../../etc/passwd",
    "encoded dot segments": "http://{host}/{version}/Accounts/{account}/Recordings/%2e%2e/{sid}",
    "another resource": "http://{host}/{version}/Accounts/{account}/Calls/{sid}",
    "extension already": "http://{host}{path}.mp3",
    "another account": "http://{host}/{version}/Accounts/{other}/Recordings/{sid}",
    "another recording": "http://{host}/{version}/Accounts/{account}/Recordings/{other_sid}",
    "upper-case SID": "http://{host}/{version}/Accounts/{account}/Recordings/{upper_sid}",
}


@pytest.mark.parametrize("template", REFUSED_URLS.values(), ids=REFUSED_URLS.keys())
def test_suspicious_urls_are_refused_without_a_request(
    media, make_fetcher, recordings_dir, call_sid, template
):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")
    host = host_of(media.base_url)
    path = url.removeprefix(media.base_url)
    suspicious = template.format(
        host=host,
        port=media.server.server_address[1],
        path=path,
        version=API_VERSION,
        account=ACCOUNT_SID,
        other=OTHER_ACCOUNT_SID,
        sid=recording.sid,
        other_sid=new_sid("RE"),
        upper_sid="RE" + recording.sid[2:].upper(),
    )

    result = make_fetcher(host, "localhost").fetch(suspicious, call_sid, recording.sid)

    assert (result.ok, result.reason, result.attempts) == (False, "not_allowed", 0)
    assert result.detail
    assert media.requests == []
    assert files_under(recordings_dir) == []


BAD_SIDS = {
    "traversal call": ("../../etc", None),
    "traversal recording": (None, "../../../etc/passwd"),
    "upper-case hex": ("CA" + "AB" * 16, None),
    "wrong prefix": (None, "CA" + "ab" * 16),
    "too short": (None, "RE" + "ab" * 15),
    "trailing newline": ("CA" + "ab" * 16 + "\n", None),
    "empty": ("", None),
    "absolute": (None, "/RE" + "ab" * 16),
}


@pytest.mark.parametrize(("bad_call", "bad_recording"), BAD_SIDS.values(), ids=BAD_SIDS.keys())
def test_bad_sids_are_refused(
    media, make_fetcher, recordings_dir, call_sid, bad_call, bad_recording
):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    result = make_fetcher(host_of(media.base_url)).fetch(
        url, bad_call if bad_call is not None else call_sid, bad_recording or recording.sid
    )

    assert (result.ok, result.reason) == (False, "not_allowed")
    assert media.requests == []
    assert files_under(recordings_dir.parent) == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_a_host_off_the_list_is_refused(
    media, scripted, make_fetcher, recordings_dir, call_sid, status
):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")
    # Same machine, other host name: "localhost" is not on this fetcher's list.
    elsewhere = url.replace("127.0.0.1", "localhost") + ".wav"
    redirector = scripted(answer_with(status, headers={"Location": elsewhere}))
    fetcher = make_fetcher(host_of(redirector.base_url))

    result = fetcher.fetch(redirector.recording_url(recording.sid), call_sid, recording.sid)

    assert (result.ok, result.reason, result.attempts) == (False, "not_allowed", 1)
    assert "redirect" in result.detail
    assert len(redirector.requests) == 1
    assert media.requests == []  # nothing was sent there
    assert files_under(recordings_dir) == []


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_an_allowed_host_is_followed_without_the_credentials(
    scripted, make_fetcher, recordings_dir, call_sid, status
):
    # Twilio's media URL redirects to where the file is stored: followed when that host is
    # allowed, but the account SID and auth token stay with the host they were meant for.
    wav = (AUDIO_DIR / "ru_yes.wav").read_bytes()
    storage = scripted(answer_with(200, wav, {"Content-Type": "audio/x-wav"}), host="localhost")
    stored_at = storage.base_url.replace("127.0.0.1", "localhost") + "/stored/file.wav"
    redirector = scripted(answer_with(status, headers={"Location": stored_at}))
    fetcher = make_fetcher(host_of(redirector.base_url), host_of(stored_at).split("/")[0])
    sid = new_sid("RE")

    result = fetcher.fetch(redirector.recording_url(sid), call_sid, sid)

    assert result.ok, result
    assert redirector.requests[0][2] and redirector.requests[0][2].startswith("Basic ")
    assert [authorization for _, _, authorization in storage.requests] == [None]


def test_a_401_from_the_media_host_is_logged_loudly_once_per_call_and_counted(
    media, make_fetcher, call_sid, caplog
):
    # No credentials configured (the account SID missing): Twilio's media host says 401.
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")
    fetcher = make_fetcher(host_of(url).split("/")[0], account_sid="")
    with caplog.at_level("ERROR", logger="ivr.recordings"):
        first = fetcher.fetch(url, call_sid, recording.sid)
        again = fetcher.fetch(url, call_sid, recording.sid)
    assert (first.ok, first.detail, again.detail) == (False, "HTTP 401", "HTTP 401")
    loud = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(loud) == 1 and "IVR_TWILIO_ACCOUNT_SID" in loud[0].getMessage()
    assert fetcher.health() == {"media_auth_failures": 2, "last_media_auth_failure": "HTTP 401"}


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http://user@{host}/stored/x.wav"]
)
def test_a_redirect_to_another_scheme_or_with_user_info_is_refused(
    scripted, make_fetcher, recordings_dir, call_sid, location
):
    server = scripted(lambda handler: answer_with(302, headers={"Location": target})(handler))
    target = location.format(host=host_of(server.base_url))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url)).fetch(server.recording_url(sid), call_sid, sid)

    assert (result.ok, result.reason) == (False, "not_allowed")
    assert len(server.requests) == 1
    assert files_under(recordings_dir) == []


def test_a_redirect_on_the_same_host_is_followed(scripted, make_fetcher, call_sid):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/stored/"):
            answer_with(200, b"RIFF....WAVE", {"Content-Type": "audio/x-wav"})(handler)
        else:
            answer_with(302, headers={"Location": "/stored/a.wav"})(handler)

    server = scripted(answer)
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url)).fetch(server.recording_url(sid), call_sid, sid)

    assert result.ok and result.path.read_bytes() == b"RIFF....WAVE"
    assert [path for _, path, _ in server.requests][1] == "/stored/a.wav"


def test_a_redirect_loop_ends(scripted, make_fetcher, call_sid, recordings_dir):
    server = scripted(answer_with(302, headers={"Location": "/again"}))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url)).fetch(server.recording_url(sid), call_sid, sid)

    assert (result.ok, result.reason) == (False, "not_allowed")
    assert len(server.requests) <= 5
    assert files_under(recordings_dir) == []


# Size, disk and network ------------------------------------------------------------------


def test_too_large_by_content_length_is_not_downloaded(
    media, make_fetcher, recordings_dir, call_sid
):
    big = AUDIO_DIR / "ru_order_digits_1_44k_stereo.wav"
    url, recording = media.add(ACCOUNT_SID, big)

    result = make_fetcher(host_of(media.base_url), max_bytes=100_000).fetch(
        url, call_sid, recording.sid
    )

    assert (result.ok, result.reason, result.attempts) == (False, "too_large", 1)
    assert str(big.stat().st_size) in result.detail  # the declared length decided it
    assert not recordings_dir.exists()


def test_too_large_while_streaming_leaves_nothing(scripted, make_fetcher, recordings_dir, call_sid):
    # No Content-Length: the body runs until the server closes the connection.
    body = b"RIFF" + os.urandom(3_000_000)
    server = scripted(answer_with(200, body, {"Content-Length": None}))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url), max_bytes=1_000_000).fetch(
        server.recording_url(sid), call_sid, sid
    )

    assert (result.ok, result.reason, result.attempts) == (False, "too_large", 1)
    assert "more than 1000000 bytes" in result.detail
    assert files_under(recordings_dir) == []


def test_exactly_max_bytes_is_accepted(scripted, make_fetcher, call_sid):
    server = scripted(answer_with(200, b"x" * 1000, {"Content-Length": None}))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url), max_bytes=1000).fetch(
        server.recording_url(sid), call_sid, sid
    )

    assert result.ok and result.bytes == 1000


def test_recordings_dir_that_is_a_file_is_a_disk_error(
    media, make_fetcher, recordings_dir, call_sid, sleeps
):
    recordings_dir.write_text("not a folder")
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    result = make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid)

    assert (result.ok, result.reason, result.attempts) == (False, "disk_error", 1)
    assert sleeps == []
    assert recordings_dir.read_text() == "not a folder"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_read_only_recordings_dir_is_a_disk_error(media, make_fetcher, recordings_dir, call_sid):
    recordings_dir.mkdir(mode=0o500)
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")
    try:
        result = make_fetcher(host_of(media.base_url)).fetch(url, call_sid, recording.sid)
    finally:
        recordings_dir.chmod(0o700)

    assert (result.ok, result.reason) == (False, "disk_error")
    assert files_under(recordings_dir) == []


def test_disk_full_while_writing_leaves_no_partial_file(
    media, make_fetcher, recordings_dir, call_sid
):
    resource = pytest.importorskip("resource")
    signal = pytest.importorskip("signal")
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("no SIGXFSZ on this platform")
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_order_digits_1_44k_stereo.wav")
    fetcher = make_fetcher(host_of(media.base_url))
    # A file-size limit makes write() fail with EFBIG part-way, as a full disk fails it.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        result = fetcher.fetch(url, call_sid, recording.sid)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)

    assert (result.ok, result.reason, result.attempts) == (False, "disk_error", 1)
    assert files_under(recordings_dir) == []


def test_nothing_listening_is_unreachable(make_fetcher, recordings_dir, call_sid, sleeps):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sid = new_sid("RE")
    url = f"http://127.0.0.1:{port}/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}"

    result = make_fetcher(f"127.0.0.1:{port}").fetch(url, call_sid, sid)

    assert (result.ok, result.reason, result.attempts) == (False, "unreachable", 5)
    assert sleeps == list(DELAYS)
    assert files_under(recordings_dir) == []


def test_a_server_that_never_answers_times_out(scripted, make_fetcher, recordings_dir, call_sid):
    release = threading.Event()
    server = scripted(lambda handler: release.wait(5))
    sid = new_sid("RE")
    try:
        result = make_fetcher(host_of(server.base_url), timeout=0.2, retry_delays=()).fetch(
            server.recording_url(sid), call_sid, sid
        )
    finally:
        release.set()

    assert (result.ok, result.reason, result.attempts) == (False, "timeout", 1)
    assert files_under(recordings_dir) == []


def test_a_trickling_body_hits_the_download_deadline(
    scripted, make_fetcher, recordings_dir, call_sid
):
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        for _ in range(50):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.05)

    server = scripted(trickle)
    sid = new_sid("RE")

    result = make_fetcher(
        host_of(server.base_url), retry_delays=(), max_download_seconds=0.3
    ).fetch(server.recording_url(sid), call_sid, sid)

    assert (result.ok, result.reason) == (False, "timeout")
    assert files_under(recordings_dir) == []


def test_a_body_cut_short_is_unreachable(scripted, make_fetcher, recordings_dir, call_sid):
    server = scripted(answer_with(200, b"RIFF", {"Content-Length": "1000"}))
    sid = new_sid("RE")

    result = make_fetcher(host_of(server.base_url), retry_delays=()).fetch(
        server.recording_url(sid), call_sid, sid
    )

    assert (result.ok, result.reason) == (False, "unreachable")
    assert files_under(recordings_dir) == []


# Deleting Twilio's copy ------------------------------------------------------------------


def test_delete_remote_deletes_the_recording_resource(media, make_fetcher, call_sid):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")
    fetcher = make_fetcher(host_of(media.base_url))
    assert fetcher.fetch(url, call_sid, recording.sid).ok

    assert fetcher.delete_remote(url) is True

    assert recording.sid not in media.recordings
    assert media.requests[-1][0] == url.removeprefix(media.base_url) + ".json"
    assert fetcher.delete_remote(url) is True  # already gone is gone


def test_delete_remote_sends_delete_with_basic_auth(scripted, make_fetcher):
    server = scripted(answer_with(204))
    sid = new_sid("RE")

    assert make_fetcher(host_of(server.base_url)).delete_remote(server.recording_url(sid))

    [(method, path, authorization)] = server.requests
    assert (method, path) == (
        "DELETE",
        f"/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}.json",
    )
    assert authorization == BASIC_AUTH


def test_delete_remote_with_a_wrong_token_keeps_the_recording(media, make_fetcher):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    assert make_fetcher(host_of(media.base_url), auth_token="wrong").delete_remote(url) is False
    assert recording.sid in media.recordings


@pytest.mark.parametrize("status", [500, 302])
def test_delete_remote_reports_failure(scripted, make_fetcher, status):
    server = scripted(answer_with(status, headers={"Location": "/elsewhere"}))

    assert (
        make_fetcher(host_of(server.base_url)).delete_remote(server.recording_url(new_sid("RE")))
        is False
    )


def test_delete_remote_only_talks_to_allowed_hosts(media, make_fetcher):
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    assert make_fetcher("api.twilio.com").delete_remote(url) is False
    assert make_fetcher(host_of(media.base_url)).delete_remote("file:///etc/passwd") is False
    assert media.requests == [] and recording.sid in media.recordings


def test_delete_remote_to_nothing_listening_is_false(make_fetcher):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{new_sid('RE')}"

    assert make_fetcher(f"127.0.0.1:{port}").delete_remote(url) is False


# Purging old recordings ------------------------------------------------------------------


NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path) -> Iterator[database.Database]:
    db = database.connect(tmp_path / "ivr.sqlite3")
    database.migrate(db)
    yield db
    db.conn.close()


def add_recording(store, recordings_dir: Path, age_days: float, **columns) -> tuple[str, Path]:
    """A stored recording made age_days before NOW, with its file on disk."""
    call_sid, sid = new_sid("CA"), new_sid("RE")
    made = database.timestamp(NOW - timedelta(days=age_days))
    path = recording_path(recordings_dir, call_sid, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF....WAVE")
    with database.write_transaction(store):
        call_store.insert_call(
            store,
            {
                "call_sid": call_sid,
                "line": "domestic",
                "started_at": made,
                "updated_at": made,
                "step": "ended",
            },
        )
        store["recordings"].insert(
            {
                "sid": sid,
                "call_sid": call_sid,
                "purpose": "order_number",
                "url": f"https://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}",
                "status": "stored",
                "local_path": str(path),
                "bytes": 12,
                "created_at": made,
                "updated_at": made,
                **columns,
            }
        )
    return sid, path


def recording_row(store, sid: str) -> dict:
    return dict(store.execute("SELECT * FROM recordings WHERE sid = ?", [sid]).fetchone())


def test_purge_removes_old_files_and_keeps_new_ones(store, recordings_dir):
    old_sid, old_path = add_recording(store, recordings_dir, age_days=91)
    new_sid_, new_path = add_recording(store, recordings_dir, age_days=89)

    count = purge(store, recordings_dir, NOW - timedelta(days=90), now=NOW)

    assert count == 1
    assert not old_path.exists() and not old_path.parent.exists()  # the empty call folder too
    assert new_path.read_bytes() == b"RIFF....WAVE"
    old, new = recording_row(store, old_sid), recording_row(store, new_sid_)
    assert (old["status"], old["local_path"]) == ("purged", None)
    assert old["updated_at"] == database.timestamp(NOW)
    assert (new["status"], new["local_path"]) == ("stored", str(new_path))
    assert purge(store, recordings_dir, NOW - timedelta(days=90), now=NOW) == 0


def test_purge_marks_rows_whose_file_is_already_gone(store, recordings_dir):
    sid, path = add_recording(store, recordings_dir, age_days=200, status="failed")
    path.unlink()

    assert purge(store, recordings_dir, NOW - timedelta(days=90)) == 1
    assert recording_row(store, sid)["status"] == "purged"


def test_purge_follows_local_path_only_to_a_recordings_file(store, recordings_dir, tmp_path):
    moved_sid, moved_path = add_recording(store, tmp_path / "old-recordings", age_days=100)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    odd_sid, odd_path = add_recording(store, recordings_dir, age_days=100, local_path=str(victim))

    assert purge(store, recordings_dir, NOW - timedelta(days=90)) == 2

    assert not moved_path.exists()  # kept under an earlier recordings_dir, still purged
    assert not odd_path.exists()  # the canonical file goes ...
    assert victim.read_text() == "keep me"  # ... but nothing outside the naming scheme
    assert {recording_row(store, sid)["status"] for sid in (moved_sid, odd_sid)} == {"purged"}


def test_purge_removes_stale_half_written_downloads(store, recordings_dir):
    sid, path = add_recording(store, recordings_dir, age_days=1)
    stale = path.parent / f".{new_sid('RE')}.abc123.part"
    fresh = path.parent / f".{new_sid('RE')}.def456.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    long_ago = (NOW - timedelta(days=100)).timestamp()
    os.utime(stale, (long_ago, long_ago))

    assert purge(store, recordings_dir, NOW - timedelta(days=90)) == 0

    assert not stale.exists()
    assert fresh.exists() and path.exists()


# Settings and construction ---------------------------------------------------------------


def test_recording_settings_defaults():
    settings = load_settings({})

    assert settings.recording_hosts == ("api.twilio.com",)
    assert settings.recordings_dir == "instance/recordings"
    assert settings.recording_retention_days == 90
    assert settings.delete_twilio_recordings is False
    assert settings.max_recording_bytes == 10_000_000


def test_recording_settings_from_the_environment():
    settings = load_settings(
        {
            "IVR_RECORDING_HOSTS": " API.twilio.com , 127.0.0.1:8080,",
            "IVR_RECORDINGS_DIR": "/var/lib/ivr/recordings",
            "IVR_RECORDING_RETENTION_DAYS": "30",
            "IVR_DELETE_TWILIO_RECORDINGS": "true",
            "IVR_MAX_RECORDING_BYTES": "5000000",
        }
    )

    assert settings.recording_hosts == ("api.twilio.com", "127.0.0.1:8080")
    assert settings.recordings_dir == "/var/lib/ivr/recordings"
    assert settings.recording_retention_days == 30
    assert settings.delete_twilio_recordings is True
    assert settings.max_recording_bytes == 5_000_000


@pytest.mark.parametrize(
    "environ",
    [
        {"IVR_RECORDING_HOSTS": "https://api.twilio.com/"},
        {"IVR_RECORDING_HOSTS": " , "},
        {"IVR_RECORDING_RETENTION_DAYS": "0"},
        {"IVR_RECORDING_RETENTION_DAYS": "ninety"},
        {"IVR_MAX_RECORDING_BYTES": "-1"},
    ],
)
def test_bad_recording_settings_are_config_errors(environ):
    with pytest.raises(ConfigError):
        load_settings(environ)


def test_fetcher_from_settings(media, tmp_path, call_sid):
    settings = Settings(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        recording_hosts=(host_of(media.base_url),),
        recordings_dir=str(tmp_path / "stored"),
        max_recording_bytes=100,
    )
    url, recording = media.add(ACCOUNT_SID, AUDIO_DIR / "ru_yes.wav")

    result = RecordingFetcher.from_settings(settings).fetch(url, call_sid, recording.sid)

    assert result.reason == "too_large"  # max_recording_bytes was applied
    assert RecordingFetcher.from_settings(Settings()).allowed_hosts == (
        AllowedHost("api.twilio.com"),
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("api.twilio.com", AllowedHost("api.twilio.com")),
        ("API.Twilio.com", AllowedHost("api.twilio.com")),
        ("127.0.0.1:8080", AllowedHost("127.0.0.1", 8080)),
        ("[::1]:8080", AllowedHost("::1", 8080)),
        ("localhost", AllowedHost("localhost")),
    ],
)
def test_allowed_host_entries(entry, expected):
    assert AllowedHost.parse(entry) == expected


@pytest.mark.parametrize(
    "entry",
    ["", "https://api.twilio.com", "api.twilio.com/", "user@host", "host:", "host:0", "127.1"],
)
def test_bad_allowed_host_entries(entry):
    with pytest.raises(ValueError):
        AllowedHost.parse(entry)


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("api.twilio.com", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("2130706433", False),
        ("127.1", False),
        ("0x7f.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("fe80::1%eth0", False),
        ("-bad.example", False),
        ("a..b", False),
        ("", False),
    ],
)
def test_canonical_hosts(host, canonical):
    assert is_canonical_host(host) is canonical


def _make_run_recording_hosts() -> tuple[str, ...]:
    """The IVR_RECORDING_HOSTS `make run` uses when none is set (read with `make -n`)."""
    import re
    import shutil
    import subprocess

    if not shutil.which("make"):
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parent.parent
    commands = subprocess.run(
        ["make", "-n", "-s", "run"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    default = re.search(r"IVR_RECORDING_HOSTS:-([^}]*)\}", commands).group(1)
    return tuple(part.strip() for part in default.split(","))


def test_make_run_fetches_recordings_only_from_the_emulators_media_host():
    from ivr.cli import EMULATOR_MEDIA_PORT

    allowed = [AllowedHost.parse(entry) for entry in _make_run_recording_hosts()]
    assert [entry.admits("127.0.0.1", EMULATOR_MEDIA_PORT) for entry in allowed] == [True]
    for host, port in [("127.0.0.1", 8080), ("127.0.0.1", 22), ("api.twilio.com", 443)]:
        assert not any(entry.admits(host, port) for entry in allowed), (host, port)


def test_ivr_calls_media_host_listens_on_the_agreed_port():
    from click import ClickException

    from ivr.cli import media_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    media = media_server(port)
    try:
        assert media.base_url == f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with pytest.raises(ClickException, match=f"127.0.0.1:{port}"):
            media_server(port)  # taken: one line saying what to do
    finally:
        media.close()
