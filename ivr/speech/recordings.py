"""Download call recordings from Twilio's media host into local storage (the only downloader).

A RecordingUrl arrives in a webhook, so it is treated as untrusted input: it is fetched only
when it is an http(s) URL of a Twilio Recording resource on a host of IVR_RECORDING_HOSTS
(https unless the host is loopback), with no user info and one spelling per IP address.
Redirects are followed only within the same scheme, host and port. The account credentials
go only to such URLs. Bodies are capped while streaming and written atomically into
``<recordings_dir>/<CallSid>/<RecordingSid>.wav``, so a failed download leaves nothing.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import logging
import os
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from ivr import db as database
from ivr.config import Settings
from ivr.db import speech as speech_store

logger = logging.getLogger("ivr.recordings")

FetchReason = Literal[
    "not_allowed", "not_found", "too_large", "http_error", "unreachable", "timeout", "disk_error"
]

CALL_SID = re.compile(r"CA[0-9a-f]{32}")
RECORDING_SID = re.compile(r"RE[0-9a-f]{32}")
# The path of a RecordingUrl: /2010-04-01/Accounts/{AccountSid}/Recordings/{RecordingSid}.
RECORDING_PATH = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-f]{32})/Recordings/(RE[0-9a-f]{32})")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

# Twilio answers 404 until a recording is processed; these waits cover a few seconds of that.
DEFAULT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
# However the delays are configured, a fetch never sleeps longer than this in all.
MAX_TOTAL_RETRY_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 10.0  # per connect or read
DEFAULT_MAX_DOWNLOAD_SECONDS = 60.0  # per attempt, so a trickling server cannot hold a worker
DEFAULT_MAX_BYTES = 10_000_000
MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048
CHUNK_BYTES = 64 * 1024
TEMP_SUFFIX = ".part"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class FetchResult:
    """How a download went: the stored file, or why there is none."""

    ok: bool
    path: Path | None = None
    bytes: int = 0
    content_type: str | None = None
    reason: FetchReason | None = None
    attempts: int = 0
    detail: str = ""


@dataclass(frozen=True)
class AllowedHost:
    """One entry of the allow list: a host, and the only port allowed when one is given."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> AllowedHost:
        """Parse 'host', 'host:port' or '[v6]:port'."""
        text = entry.strip().lower()
        parts = urllib.parse.urlsplit("//" + text)
        try:
            port = parts.port
        except ValueError:
            port = -1
        host = parts.hostname or ""
        if (
            port == -1
            or port == 0
            or parts.path
            or parts.query
            or parts.fragment
            or "@" in parts.netloc
            or text.endswith(":")
            or not is_canonical_host(host)
        ):
            raise ValueError(f"not a host or host:port: {entry!r}")
        return cls(host=host, port=port)

    def admits(self, host: str, port: int) -> bool:
        """Whether a URL's host and (effective) port fall under this entry."""
        return host == self.host and self.port in (None, port)


@dataclass(frozen=True)
class RecordingLocation:
    """A checked RecordingUrl, split into the parts requests are built from."""

    origin: str  # scheme://host[:port], rebuilt from the parsed parts
    path: str
    account_sid: str
    recording_sid: str


class RecordingUrlRefused(ValueError):
    """A URL or redirect that must not be requested."""


class _Failure(Exception):
    """One download attempt failed; ``retry`` says whether another attempt may help."""

    def __init__(self, reason: FetchReason, detail: str, retry: bool) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        self.retry = retry


class _AllowedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an allowed media host; credentials stay with their host.

    Twilio answers a media URL with a redirect to where the file is stored. The redirect
    is followed only when its target is on IVR_RECORDING_HOSTS, and the Authorization
    header (the account SID and auth token) is dropped whenever the target's origin differs
    from the URL it was meant for.
    """

    max_redirections = MAX_REDIRECTS

    def __init__(self, admits: Callable[[str, int], bool]) -> None:
        super().__init__()
        self.admits = admits

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        """Refuse a redirect off the allow list before anything is sent there."""
        target = _origin(newurl)
        if target is None or not self.admits(target[1], target[2]):
            fp.close()
            raise RecordingUrlRefused(f"redirect to {newurl!r} refused")
        followed = super().redirect_request(req, fp, code, msg, headers, newurl)
        if followed is not None and target != _origin(req.full_url):
            followed.remove_header("Authorization")
        return followed


def is_canonical_host(host: str) -> bool:
    """True for a DNS name or an IP address in its one standard spelling (no 127.1, 0x7f...)."""
    if not host or "%" in host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        # A numeric last label is an IP address in disguise (2130706433, 127.1, 0177.0.0.1).
        return (
            len(host) <= 253
            and all(_DNS_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit()
        )
    return str(address) == host


def is_loopback(host: str) -> bool:
    """Whether a canonical host names this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def recording_path(recordings_dir: str | Path, call_sid: str, recording_sid: str) -> Path:
    """Where a recording is stored: <recordings_dir>/<CallSid>/<RecordingSid>.wav."""
    if not CALL_SID.fullmatch(call_sid):
        raise ValueError(f"not a call SID: {call_sid!r}")
    if not RECORDING_SID.fullmatch(recording_sid):
        raise ValueError(f"not a recording SID: {recording_sid!r}")
    return Path(recordings_dir) / call_sid / f"{recording_sid}.wav"


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None when it has none."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _content_length(response: Any) -> int | None:
    """The declared body size, or None when absent or unreadable."""
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _write_all(handle: int, data: bytes) -> None:
    """Write all of data to a file descriptor (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def _network_failure(error: BaseException, what: str) -> _Failure:
    """Classify a connection-level error."""
    if isinstance(error, TimeoutError):
        return _Failure("timeout", f"{what} timed out", retry=True)
    if isinstance(error, ssl.SSLError):
        return _Failure("unreachable", f"{what}: TLS failed: {error}", retry=False)
    return _Failure("unreachable", f"{what}: {error}", retry=True)


class RecordingFetcher:
    """Fetches recordings from the allowed media hosts and deletes Twilio's copies."""

    def __init__(
        self,
        allowed_hosts: Iterable[str],
        account_sid: str,
        auth_token: str,
        recordings_dir: str | Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        *,
        max_download_seconds: float = DEFAULT_MAX_DOWNLOAD_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.allowed_hosts = tuple(AllowedHost.parse(entry) for entry in allowed_hosts)
        if not self.allowed_hosts:
            raise ValueError("no allowed recording hosts")
        if max_bytes < 1 or timeout <= 0 or max_download_seconds <= 0:
            raise ValueError("max_bytes, timeout and max_download_seconds must be positive")
        self.retry_delays = tuple(float(delay) for delay in retry_delays)
        if any(delay < 0 for delay in self.retry_delays):
            raise ValueError("retry delays cannot be negative")
        if sum(self.retry_delays) > MAX_TOTAL_RETRY_SECONDS:
            raise ValueError(f"retry delays add up to more than {MAX_TOTAL_RETRY_SECONDS:g} s")
        self.account_sid = account_sid
        self.recordings_dir = Path(recordings_dir)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_download_seconds = max_download_seconds
        self.sleep = sleep
        self._authorization = (
            "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
            if account_sid and auth_token
            else None
        )
        self.auth_failures = 0
        self.last_auth_failure: str | None = None
        self._refused_calls: set[str] = set()
        # Only the handlers we want: no proxies from the environment, no file:, ftp: or data:.
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(context=ssl.create_default_context()),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _AllowedRedirects(self._admits),
        ):
            self._opener.add_handler(handler)

    def _admits(self, host: str, port: int) -> bool:
        return any(allowed.admits(host, port) for allowed in self.allowed_hosts)

    def health(self) -> dict[str, Any]:
        """Refusals by the media host (401/403: wrong or missing account SID or token)."""
        return {
            "media_auth_failures": self.auth_failures,
            "last_media_auth_failure": self.last_auth_failure,
        }

    def _note_refusal(self, failure: _Failure, call_sid: str) -> None:
        """A 401/403 is a configuration problem: say so loudly, once per call."""
        self.auth_failures += 1
        self.last_auth_failure = failure.detail
        if call_sid in self._refused_calls:
            return
        if len(self._refused_calls) > 10_000:
            self._refused_calls.clear()
        self._refused_calls.add(call_sid)
        logger.error(
            "the media host refused the recording download (%s): check IVR_TWILIO_ACCOUNT_SID "
            "and IVR_TWILIO_AUTH_TOKEN (Twilio's HTTP auth on media URLs needs both)%s",
            failure.detail,
            "" if self._authorization else "; no credentials are configured",
            extra={"call_sid": call_sid},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> RecordingFetcher:
        """Build the fetcher the service's settings describe."""
        return cls(
            allowed_hosts=settings.recording_hosts,
            account_sid=settings.account_sid,
            auth_token=settings.auth_token,
            recordings_dir=settings.recordings_dir,
            max_bytes=settings.max_recording_bytes,
            **options,
        )

    def fetch(self, url: str, call_sid: str, recording_sid: str) -> FetchResult:
        """Download ``url + '.wav'`` to the recording's place, retrying while it is not ready."""
        log_fields = {"call_sid": call_sid, "recording_sid": recording_sid}
        try:
            target = recording_path(self.recordings_dir, call_sid, recording_sid)
            location = self.check_url(url)
            if location.recording_sid != recording_sid:
                raise RecordingUrlRefused("the URL names another recording")
        except ValueError as refused:  # a bad SID, or RecordingUrlRefused
            logger.warning("recording not fetched: %s", refused, extra=log_fields)
            return FetchResult(ok=False, reason="not_allowed", detail=str(refused))
        media_url = f"{location.origin}{location.path}.wav"
        for attempt, delay in enumerate((*self.retry_delays, None), start=1):
            try:
                size, content_type = self._download(media_url, target)
            except _Failure as failure:
                if failure.retry and delay is not None:
                    logger.info(
                        "recording fetch attempt %d failed (%s), retrying in %g s",
                        attempt,
                        failure.detail,
                        delay,
                        extra=log_fields,
                    )
                    self.sleep(delay)
                    continue
                if failure.detail in ("HTTP 401", "HTTP 403"):
                    self._note_refusal(failure, call_sid)
                logger.warning(
                    "recording fetch failed after %d attempt(s): %s",
                    attempt,
                    failure.detail,
                    extra={**log_fields, "reason": failure.reason},
                )
                return FetchResult(
                    ok=False, reason=failure.reason, attempts=attempt, detail=failure.detail
                )
            logger.info("recording stored (%d bytes)", size, extra=log_fields)
            return FetchResult(
                ok=True, path=target, bytes=size, content_type=content_type, attempts=attempt
            )
        raise AssertionError("unreachable: the last attempt always returns")

    def delete_remote(self, url: str) -> bool:
        """DELETE Twilio's copy of a recording; True when it is gone (deleted or already absent)."""
        try:
            location = self.check_url(url)
        except RecordingUrlRefused as refused:
            logger.warning("recording not deleted: %s", refused)
            return False
        request = urllib.request.Request(  # noqa: S310 - check_url allowed only http(s)
            f"{location.origin}{location.path}.json", headers=self._headers(), method="DELETE"
        )
        log_fields = {"recording_sid": location.recording_sid}
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404:
                logger.info("recording already deleted at Twilio", extra=log_fields)
                return True
            logger.warning("deleting Twilio's recording: HTTP %d", error.code, extra=log_fields)
            return False
        except (
            RecordingUrlRefused,
            urllib.error.URLError,
            OSError,
            http.client.HTTPException,
        ) as error:
            logger.warning("deleting Twilio's recording failed: %s", error, extra=log_fields)
            return False
        logger.info("recording deleted at Twilio (HTTP %d)", status, extra=log_fields)
        return 200 <= status < 300

    def check_url(self, url: str) -> RecordingLocation:
        """Split a Twilio Recording URL on an allowed host; raise RecordingUrlRefused if not."""
        if (
            len(url) > MAX_URL_LENGTH
            or not url.isascii()
            or any(char <= " " or char in "\\\x7f" for char in url)
        ):
            raise RecordingUrlRefused(
                "URL is too long or has spaces, control or non-ASCII characters"
            )
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise RecordingUrlRefused(f"scheme {parts.scheme or '(none)'!r} is not http or https")
        if "@" in parts.netloc:
            raise RecordingUrlRefused("URL carries user info")
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise RecordingUrlRefused("URL has a query or fragment")
        host = parts.hostname or ""
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise RecordingUrlRefused("URL has a bad port") from None
        if not is_canonical_host(host):
            raise RecordingUrlRefused(f"host {host!r} is not a plain DNS name or IP address")
        if not any(allowed.admits(host, port) for allowed in self.allowed_hosts):
            raise RecordingUrlRefused(f"host {host}:{port} is not in IVR_RECORDING_HOSTS")
        if parts.scheme != "https" and not is_loopback(host):
            raise RecordingUrlRefused(f"{host} must be reached over https")
        match = RECORDING_PATH.fullmatch(parts.path)
        if match is None:
            raise RecordingUrlRefused("not a Twilio Recording URL")
        account_sid, recording_sid = match.groups()
        if self.account_sid and account_sid != self.account_sid:
            raise RecordingUrlRefused("the recording belongs to another account")
        netloc = f"[{host}]" if ":" in host else host
        if port != DEFAULT_PORTS[parts.scheme]:
            netloc += f":{port}"
        return RecordingLocation(
            origin=f"{parts.scheme}://{netloc}",
            path=parts.path,
            account_sid=account_sid,
            recording_sid=recording_sid,
        )

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "hotline-ivr recordings"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        return headers

    def _download(self, media_url: str, target: Path) -> tuple[int, str | None]:
        """One attempt: GET the media and store it; raises _Failure."""
        # media_url was built from check_url's parts: http(s) on an allowed host only.
        request = urllib.request.Request(media_url, headers=self._headers())  # noqa: S310
        deadline = time.monotonic() + self.max_download_seconds
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except RecordingUrlRefused as refused:
            raise _Failure("not_allowed", str(refused), retry=False) from None
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404:
                raise _Failure("not_found", "HTTP 404 (not available yet)", retry=True) from None
            if 300 <= error.code < 400:
                # urllib would not follow it: another scheme, a loop, or too many hops.
                detail = f"HTTP {error.code} redirect not followed"
                raise _Failure("not_allowed", detail, retry=False) from None
            # Twilio's 429 and 5xx are passing trouble; 401, 403 and the like are not.
            transient = error.code == 429 or error.code >= 500
            raise _Failure("http_error", f"HTTP {error.code}", retry=transient) from None
        except urllib.error.URLError as error:
            raise _network_failure(error.reason, "connecting") from None
        except (OSError, http.client.HTTPException) as error:
            raise _network_failure(error, "connecting") from None
        with response:
            declared = _content_length(response)
            if declared is not None and declared > self.max_bytes:
                raise _Failure(
                    "too_large", f"Content-Length {declared} > {self.max_bytes}", retry=False
                )
            size = self._store(response, target, deadline, declared)
            return size, response.headers.get("Content-Type")

    def _store(self, response: Any, target: Path, deadline: float, declared: int | None) -> int:
        """Stream the body into a temp file beside the target, then rename it into place."""
        try:
            self.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.parent.mkdir(mode=0o700, exist_ok=True)
            handle, temp_name = tempfile.mkstemp(
                prefix=f".{target.stem}.", suffix=TEMP_SUFFIX, dir=target.parent
            )
        except OSError as error:
            raise _Failure("disk_error", f"{target.parent}: {error}", retry=False) from None
        temp_path = Path(temp_name)
        try:
            size = 0
            try:
                while chunk := self._read_chunk(response, deadline):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Failure("too_large", f"more than {self.max_bytes} bytes", False)
                    _write_all(handle, chunk)
                if declared is not None and size != declared:
                    # read1 ends quietly when the connection drops: a cut-short body.
                    raise _Failure("unreachable", f"body ended at {size} of {declared} bytes", True)
                os.fsync(handle)
            finally:
                os.close(handle)
            os.replace(temp_path, target)
        except OSError as error:
            # _read_chunk turns network errors into _Failure, so an OSError here is the disk's.
            with contextlib.suppress(OSError):
                temp_path.unlink(missing_ok=True)
            raise _Failure("disk_error", f"{target}: {error}", retry=False) from None
        except BaseException:
            with contextlib.suppress(OSError):
                temp_path.unlink(missing_ok=True)
            raise
        return size

    def _read_chunk(self, response: Any, deadline: float) -> bytes:
        """Read what has arrived (one socket read at most); raises _Failure."""
        if time.monotonic() > deadline:
            raise _Failure(
                "timeout", f"download took over {self.max_download_seconds:g} s", retry=True
            )
        try:
            return response.read1(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:
            raise _network_failure(error, "reading the body") from None


def purge(
    db: Database,
    recordings_dir: str | Path,
    older_than: datetime,
    *,
    now: datetime | None = None,
) -> int:
    """Delete the local files of recordings made before ``older_than``; mark them purged."""
    root = Path(recordings_dir)
    purged: list[str] = []
    for row in speech_store.recordings_created_before(db, older_than):
        try:
            files = stored_files(root, row)
            for path in files:
                path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("recording not purged: %s", error, extra={"recording_sid": row["sid"]})
            continue
        for path in files:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only succeeds once the call's folder is empty
        purged.append(row["sid"])
    _remove_stale_temp_files(root, older_than)
    if purged:
        at = now or datetime.now(UTC)
        with database.write_transaction(db):
            for sid in purged:
                speech_store.mark_recording_purged(db, sid, at)
    logger.info("purged %d recording(s) made before %s", len(purged), older_than.isoformat())
    return len(purged)


def stored_files(root: Path, row: dict[str, Any]) -> list[Path]:
    """The files a recording row may have on disk; never anything but <CallSid>/<RE...>.wav."""
    call_sid, sid = row["call_sid"], row["sid"]
    try:
        files = [recording_path(root, call_sid, sid)]
    except ValueError:
        return []
    # A copy kept under an earlier recordings_dir still goes, as long as it has our file name.
    if row.get("local_path"):
        stored = Path(row["local_path"])
        if stored.parts[-2:] == (call_sid, f"{sid}.wav") and stored not in files:
            files.append(stored)
    return files


def _remove_stale_temp_files(root: Path, older_than: datetime) -> None:
    """Remove half-written downloads a crashed process left behind."""
    cutoff = older_than.timestamp()
    for temp_path in root.glob(f"CA*/.RE*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if temp_path.stat().st_mtime < cutoff:
                temp_path.unlink()
