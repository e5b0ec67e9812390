"""The one adapter over Twilio's REST API: place and move calls, read their status, send SMS.

Everything goes through the `twilio` package's `Client`, pointed at `IVR_TWILIO_API_URL`
(Twilio's own https://api.twilio.com by default; the local stand-in, ivr/emulator/rest.py,
in tests and `ivr simulate`). The client's `api` domain keeps its base URL in
`client.api.base_url` (twilio/base/domain.py: `Domain.absolute_url` joins it with each
resource's path), so replacing it sends the same requests, with the same paths and
parameters, to the stand-in. Every failure — Twilio's error answers, time-outs, a host
that cannot be reached — comes out as one exception, `TwilioApiError`, which says whether
trying again later may help.
"""

from __future__ import annotations

from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_API_URL = "https://api.twilio.com"
# The Call resource's StatusCallbackEvent values (Calls API, "StatusCallbackEvent").
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")


class TwilioApiError(Exception):
    """A REST request that did not succeed.

    `status` is the HTTP status (None when no answer came), `code` Twilio's error code
    (https://www.twilio.com/docs/errors/CODE) when the answer carried one. `retryable`:
    time-outs, an unreachable host, 429 and 5xx may succeed later; other 4xx will not.
    """

    def __init__(
        self, message: str, status: int | None = None, code: int | None = None, retryable=False
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = retryable


class TwilioApi:
    """Calls, call updates and messages on one Twilio account."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_url: str = TWILIO_API_URL,
        timeout: float = 5.0,
    ):
        self.account_sid = account_sid
        self.api_url = api_url.rstrip("/")
        # environment={}: TWILIO_EDGE / TWILIO_REGION in the process environment would
        # rewrite the host (Client.get_hostname); the URL we are given is the one to use.
        self.client = Client(
            account_sid,
            auth_token,
            http_client=TwilioHttpClient(timeout=timeout),
            environment={},
        )
        self.client.api.base_url = self.api_url

    @classmethod
    def from_settings(cls, settings) -> TwilioApi:
        """The adapter for the service's settings (IVR_TWILIO_* variables)."""
        return cls(
            settings.account_sid,
            settings.auth_token,
            getattr(settings, "twilio_api_url", None) or TWILIO_API_URL,
        )

    def create_call(
        self,
        *,
        to: str,
        from_: str,
        url: str | None = None,
        twiml: str | None = None,
        status_callback: str | None = None,
        status_callback_events: tuple[str, ...] = CALL_EVENTS,
        timeout: int | None = None,
        caller_id: str | None = None,
    ) -> str:
        """Place an outbound call that runs `url`'s TwiML (or `twiml`); returns its CallSid."""
        if (url is None) == (twiml is None):
            raise ValueError("create_call takes exactly one of url and twiml")
        options: dict[str, Any] = {}
        if url is not None:
            options["url"] = url
        if twiml is not None:
            options["twiml"] = twiml
        if status_callback:
            options["status_callback"] = status_callback
            options["status_callback_event"] = list(status_callback_events)
            options["status_callback_method"] = "POST"
        if timeout is not None:
            options["timeout"] = timeout
        if caller_id:
            options["caller_id"] = caller_id
        call = self._request(lambda: self.client.calls.create(to=to, from_=from_, **options))
        return call.sid

    def update_call(
        self,
        sid: str,
        *,
        url: str | None = None,
        twiml: str | None = None,
        status: str | None = None,
    ) -> None:
        """Move a live call to new TwiML (`url` or `twiml`), or end it (`status`
        "completed" for a call in progress, "canceled" for one still queued or ringing)."""
        options: dict[str, Any] = {}
        if url is not None:
            options["url"] = url
            options["method"] = "POST"
        if twiml is not None:
            options["twiml"] = twiml
        if status is not None:
            if status not in ("completed", "canceled"):
                raise ValueError(
                    f"a call's status can be set to completed or canceled, not {status}"
                )
            options["status"] = status
        if not options:
            raise ValueError("update_call needs url, twiml or status")
        self._request(lambda: self.client.calls(sid).update(**options))

    def fetch_call(self, sid: str) -> dict[str, Any]:
        """The call as Twilio has it: sid, status, duration (seconds or None), direction,
        from, to."""
        call = self._request(lambda: self.client.calls(sid).fetch())
        duration = call.duration
        return {
            "sid": call.sid,
            "status": call.status,
            "duration": int(duration) if duration not in (None, "") else None,
            "direction": call.direction,
            "from": call._from,
            "to": call.to,
        }

    def send_message(
        self, *, to: str, from_: str, body: str, status_callback: str | None = None
    ) -> str:
        """Send an SMS from a number, or through a Messaging Service ("MG…"); returns the
        MessageSid."""
        options: dict[str, Any] = {"to": to, "body": body}
        if from_.startswith("MG"):
            options["messaging_service_sid"] = from_
        else:
            options["from_"] = from_
        if status_callback:
            options["status_callback"] = status_callback
        message = self._request(lambda: self.client.messages.create(**options))
        return message.sid

    @staticmethod
    def _request(send):
        """Run one request; every failure becomes a TwilioApiError."""
        try:
            return send()
        except TwilioRestException as error:
            status = int(error.status) if error.status else None
            retryable = status is None or status == 429 or status >= 500
            raise TwilioApiError(
                f"Twilio answered {status}: {error.msg}"
                + (f" (error {error.code})" if error.code else ""),
                status=status,
                code=error.code,
                retryable=retryable,
            ) from None
        except requests.exceptions.Timeout as error:
            raise TwilioApiError(
                f"Twilio did not answer in time: {error}", retryable=True
            ) from None
        except requests.exceptions.RequestException as error:
            raise TwilioApiError(f"Twilio could not be reached: {error}", retryable=True) from None
        except TwilioException as error:
            # The library could not read the answer (not Twilio's JSON): a proxy or an
            # outage page in between, worth another try later.
            raise TwilioApiError(f"unusable answer from Twilio: {error}", retryable=True) from None
