"""How the stand-in reaches the service: signed requests over real HTTP or a Flask test client."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Protocol

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
FALLBACK_PATH = "/twilio/fallback"
MAX_REQUESTS_PER_CALL = 300
FINISH_ON_KEY_DEFAULT = "#"
RECORD_FINISH_DEFAULT = "1234567890*#"


class Transport(Protocol):
    """Sends one POST and returns (HTTP status, body)."""

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST a form to an absolute URL."""
        ...


class HttpTransport:
    """Real HTTP, as Twilio's servers send it."""

    def __init__(self, timeout: float = 15.0):
        self.timeout = timeout

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST a form over HTTP and return (status, body)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url}")
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")


class FlaskTransport:
    """A Flask test client, for fast tests without a server."""

    def __init__(self, client):
        self.client = client

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        """POST through the test client (the URL's host is kept for the signature)."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = self.client.post(
            path, data=params, headers=headers, base_url=f"{parts.scheme}://{parts.netloc}"
        )
        return response.status_code, response.get_data(as_text=True)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for this request."""
    return RequestValidator(auth_token).compute_signature(url, params)
