"""Issue 11 end to end: the real service (LocalServer, waitress), the real REST adapter
(ivr.twilio_api over HTTP) and the Twilio REST stand-in (ivr.emulator.rest) together."""

import re
import time

import pytest
from conftest import add_operators

from ivr import db as database
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, HttpTransport, TwilioStandIn
from ivr.hours import parse_instant

CUSTOMER = "+79161234567"
LINE = "+78002345555"


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def twilio():
    with TwilioStandIn(time_scale=0.05) as stand_in:
        yield stand_in


def serve(twilio, **settings) -> LocalServer:
    """The app on loopback, its REST requests going to the stand-in."""
    return LocalServer(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        twilio_api_url=twilio.base_url,
        **settings,
    )


def test_after_hours_callback_from_the_console_rings_the_customer_from_the_line(twilio):
    """An after-hours caller asks for a callback; next morning an operator presses "Call
    back" in the console: the stand-in rings the operator's phone, the operator hears the
    whisper, then the customer's phone rings from the line's number; the result goes on
    the ticket's timeline."""
    from test_console import console_operators, sign_in

    twilio.set_phone("+79990000001", answer_after=1, talk_seconds=60)
    twilio.set_phone(CUSTOMER, answer_after=1, talk_seconds=2)
    # The business clock: the next morning (the operator is on shift); the caller's own
    # call is placed after hours (its `at`).
    morning = parse_instant("2026-11-27T09:00:00+03:00")
    with serve(twilio, demo_roster=False, dispatch_interval_seconds=0.5, now=morning) as server:
        add_operators(server.db_path, console_operators())
        caller = EmulatedCall(
            HttpTransport(),
            server.base_url,
            server.auth_token,
            account_sid=twilio.account_sid,
            from_=CUSTOMER,
            at="2026-11-26T21:30:00+03:00",
            twilio=twilio,
        )
        caller.start().press("1").press("4207315890").press("1").press("2").silence()
        assert "перезвонит вам" in caller.result.transcript
        with database.connect(server.db_path) as db:
            number = db.execute("SELECT number FROM tickets").fetchone()[0]

        # The next morning, in the console.
        client = server.app.test_client()
        assert sign_in(client).status_code == 302
        page = client.get("/console/callbacks").get_data(as_text=True)
        assert number in page and CUSTOMER not in page  # the operator never sees the number
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = client.post(f"/console/callbacks/{number}/call", data={"csrf_token": token})
        assert response.status_code == 303

        assert wait_until(
            lambda: twilio.legs_to(CUSTOMER) and twilio.legs_to(CUSTOMER)[0].finished.is_set()
        )
        (operator_leg,) = twilio.legs_to("+79990000001")
        heard = " ".join(item.text for item in operator_leg.heard if item.kind == "say")
        assert "Обращение номер" in heard and number in re.sub(r"\D", "", heard)  # the whisper
        (customer_leg,) = twilio.legs_to(CUSTOMER)
        assert customer_leg.from_ == LINE  # the line's number (callerId), not the operator's
        assert customer_leg.parent_sid == operator_leg.sid
        assert customer_leg.direction == "outbound-dial"
        assert customer_leg.status == "completed"

        def result_on_record():
            with database.connect(server.db_path) as db:
                row = db.execute(
                    "SELECT callback_attempts, callback_result FROM tickets WHERE number = ?",
                    [number],
                ).fetchone()
            return row if row and row["callback_result"] else None

        assert wait_until(result_on_record)
        assert result_on_record()["callback_result"] == "answered"
        assert result_on_record()["callback_attempts"] == 1
        timeline = client.get(f"/console/tickets/{number}").get_data(as_text=True)
        assert "клиент ответил" in timeline  # the result on the ticket page
