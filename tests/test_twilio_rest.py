"""The REST adapter (ivr/twilio_api.py) against the local Twilio stand-in
(ivr/emulator/rest.py), over real HTTP with the real `twilio` Client; and the stand-in's
outbound legs: rung phones, whispers, <Dial><Queue> bridges, redirects, status callbacks.

The "service" here is a small Flask app on loopback that answers like the real one will
once it dispatches queued callers (issue 11); every request it gets must carry a valid
X-Twilio-Signature.
"""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask, request
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

from ivr.emulator import EmulatedCall, HttpTransport
from ivr.emulator.rest import Phone, TwilioStandIn, phone_from
from ivr.twilio_api import TwilioApi, TwilioApiError

ACCOUNT = "AC" + "0" * 32
TOKEN = "rest-test-token"
OPERATOR = "+79990000001"
CUSTOMER = "+79161234567"
LINE = "+74952321000"
SCALE = 0.02  # every phone's and TwiML's second lasts 20 ms


class Service:
    """A Flask app on a real loopback port that records what Twilio's side sent it."""

    def __init__(self):
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bad_signatures: list[str] = []
        self.answers: dict[str, str] = {}
        validator = RequestValidator(TOKEN)
        app = Flask(__name__)

        @app.post("/<path:path>")
        def answer(path):
            params = request.form.to_dict()
            if not validator.validate(
                request.url, params, request.headers.get("X-Twilio-Signature", "")
            ):
                self.bad_signatures.append(request.url)
                return "forbidden", 403
            self.requests.append(("/" + path, params))
            return self.answers.get("/" + path, "<Response/>"), 200, {"Content-Type": "text/xml"}

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def got(self, path: str) -> list[dict[str, str]]:
        """The parameters of every request to `path`, in order."""
        return [params for seen, params in self.requests if seen == path]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def service():
    running = Service()
    yield running
    running.close()


@pytest.fixture
def twilio():
    with TwilioStandIn(ACCOUNT, TOKEN, time_scale=SCALE) as stand_in:
        yield stand_in


@pytest.fixture
def api(twilio):
    return TwilioApi(ACCOUNT, TOKEN, twilio.base_url, timeout=2)


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def caller(service, twilio, **kwargs) -> EmulatedCall:
    return EmulatedCall(
        HttpTransport(), service.url, TOKEN, account_sid=ACCOUNT, twilio=twilio, **kwargs
    )


QUEUE_TWIML = (
    '<Response><Enqueue action="/enqueue-done" waitUrl="/wait" waitUrlMethod="POST">'
    "support</Enqueue></Response>"
)
WAIT_TWIML = '<Response><Say>Ваш номер в очереди</Say><Pause length="20"/></Response>'
WHISPER_TWIML = (
    '<Response><Gather numDigits="1" action="/operator/accept">'
    "<Say>Обращение номер 123</Say></Gather><Say>Не принято</Say></Response>"
)
DEQUEUE_TWIML = (
    '<Response><Dial action="/operator/dial-done">'
    '<Queue url="/caller-whisper">support</Queue></Dial></Response>'
)


def queue_service(service) -> None:
    service.answers.update(
        {
            "/twilio/voice": QUEUE_TWIML,
            "/wait": WAIT_TWIML,
            "/enqueue-done": "<Response><Say>Спасибо</Say><Hangup/></Response>",
            "/operator": WHISPER_TWIML,
            "/operator/accept": DEQUEUE_TWIML,
            "/caller-whisper": "<Response><Say>Соединяю с оператором</Say></Response>",
            "/operator/dial-done": "<Response><Hangup/></Response>",
            "/redirected": "<Response><Say>Перевели</Say><Hangup/></Response>",
        }
    )


# The adapter ------------------------------------------------------------------------------


def test_the_adapter_points_twilios_client_at_the_given_url(twilio, api):
    assert api.client.api.base_url == twilio.base_url


def test_create_fetch_and_end_a_call(twilio, api, service):
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=1000)
    sid = api.create_call(
        to=OPERATOR, from_=LINE, twiml='<Response><Say>Алло</Say><Pause length="600"/></Response>'
    )
    assert sid.startswith("CA") and len(sid) == 34
    wait_until(lambda: api.fetch_call(sid)["status"] == "in-progress")
    call = api.fetch_call(sid)
    assert call | {"duration": None} == {
        "sid": sid,
        "status": "in-progress",
        "duration": None,
        "direction": "outbound-api",
        "from": LINE,
        "to": OPERATOR,
    }
    api.update_call(sid, status="completed")
    wait_until(lambda: api.fetch_call(sid)["status"] == "completed")
    assert isinstance(api.fetch_call(sid)["duration"], int)
    assert [item.text for item in twilio.calls[sid].heard if item.kind == "say"] == ["Алло"]


def test_update_with_a_url_moves_a_live_leg_to_new_twiml(twilio, api, service):
    queue_service(service)
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=1000)
    sid = api.create_call(
        to=OPERATOR, from_=LINE, twiml='<Response><Pause length="600"/></Response>'
    )
    wait_until(lambda: api.fetch_call(sid)["status"] == "in-progress")
    api.update_call(sid, url=service.url + "/redirected")
    wait_until(lambda: api.fetch_call(sid)["status"] == "completed")
    leg = twilio.calls[sid]
    assert [item.text for item in leg.heard if item.kind == "say"] == ["Перевели"]
    (params,) = service.got("/redirected")
    assert params["CallSid"] == sid and params["Direction"] == "outbound-api"


def test_a_leg_that_has_ended_cannot_be_moved(twilio, api):
    twilio.set_phone(OPERATOR, fail=True)
    sid = api.create_call(to=OPERATOR, from_=LINE, twiml="<Response><Say>x</Say></Response>")
    wait_until(lambda: api.fetch_call(sid)["status"] == "failed")
    with pytest.raises(TwilioApiError) as raised:
        api.update_call(sid, url="http://127.0.0.1:9/x")
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (400, 21220, False)


def test_bad_credentials_are_refused_with_twilios_401(twilio):
    wrong = TwilioApi(ACCOUNT, "not-the-token", twilio.base_url)
    with pytest.raises(TwilioApiError) as raised:
        wrong.create_call(to=OPERATOR, from_=LINE, twiml="<Response/>")
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (401, 20003, False)
    assert twilio.calls == {}


def test_missing_parameters_are_refused_and_not_worth_retrying(api):
    with pytest.raises(TwilioApiError) as raised:
        api.create_call(to="", from_=LINE, url="http://127.0.0.1:9/x")
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (400, 21201, False)
    with pytest.raises(TwilioApiError) as raised:
        api.send_message(to=CUSTOMER, from_=LINE, body="")
    assert raised.value.code == 21602


def test_unknown_calls_are_404(api):
    with pytest.raises(TwilioApiError) as raised:
        api.fetch_call("CA" + "f" * 32)
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_an_unreachable_api_is_worth_retrying():
    stand_in = TwilioStandIn(ACCOUNT, TOKEN)
    url = stand_in.base_url
    stand_in.close()
    with pytest.raises(TwilioApiError) as raised:
        TwilioApi(ACCOUNT, TOKEN, url, timeout=1).fetch_call("CA" + "0" * 32)
    assert raised.value.retryable and raised.value.status is None


def test_a_server_error_is_worth_retrying(twilio, api, monkeypatch):
    monkeypatch.setattr(twilio, "_route", lambda *args: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(TwilioApiError) as raised:
        api.fetch_call("CA" + "0" * 32)
    assert raised.value.status == 500 and raised.value.retryable


def test_settings_build_the_adapter():
    class Settings:
        account_sid, auth_token, twilio_api_url = ACCOUNT, TOKEN, "http://127.0.0.1:1234/"

    assert TwilioApi.from_settings(Settings).client.api.base_url == "http://127.0.0.1:1234"

    class Older:
        account_sid, auth_token = ACCOUNT, TOKEN

    assert TwilioApi.from_settings(Older).client.api.base_url == "https://api.twilio.com"


# Messages ---------------------------------------------------------------------------------


def test_a_message_is_recorded_and_its_delivery_reported_signed(twilio, api, service):
    sid = api.send_message(
        to=CUSTOMER, from_=LINE, body="Обращение 123", status_callback=service.url + "/sms"
    )
    assert sid.startswith("SM")
    (message,) = twilio.messages
    assert (message.to, message.from_, message.body) == (CUSTOMER, LINE, "Обращение 123")
    wait_until(lambda: len(service.got("/sms")) == 2)
    assert [params["MessageStatus"] for params in service.got("/sms")] == ["sent", "delivered"]
    assert service.got("/sms")[0]["MessageSid"] == sid
    assert not service.bad_signatures


def test_a_messaging_service_sends_and_a_dead_handset_is_undelivered(twilio, api, service):
    twilio.set_phone(CUSTOMER, message_status="undelivered")
    service_sid = "MG" + "1" * 32
    api.send_message(to=CUSTOMER, from_=service_sid, body="x", status_callback=service.url + "/sms")
    (message,) = twilio.messages
    assert message.messaging_service_sid == service_sid and message.from_ == ""
    wait_until(lambda: len(service.got("/sms")) == 2)
    last = service.got("/sms")[-1]
    assert (last["MessageStatus"], last["ErrorCode"]) == ("undelivered", "30003")


# Legs: phones, status callbacks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "final"),
    [
        ({"decline": True}, "busy"),
        ({"no_answer": True}, "no-answer"),
        ({"fail": True}, "failed"),
        ({"answer_after": 0, "talk_seconds": 1}, "completed"),
    ],
)
def test_status_callbacks_follow_the_phone_and_are_signed(twilio, api, service, behaviour, final):
    twilio.set_phone(OPERATOR, **behaviour)
    sid = api.create_call(
        to=OPERATOR,
        from_=LINE,
        twiml='<Response><Pause length="600"/></Response>',
        status_callback=service.url + "/status",
        timeout=20,
    )
    wait_until(lambda: twilio.calls[sid].finished.is_set())
    wait_until(lambda: any(p["CallStatus"] == final for p in service.got("/status")))
    callbacks = service.got("/status")
    expected = ["initiated", "ringing"] + (["in-progress"] if final == "completed" else [])
    assert [p["CallStatus"] for p in callbacks] == [*expected, final]
    assert [p["SequenceNumber"] for p in callbacks] == [str(n) for n in range(len(callbacks))]
    assert {p["CallbackSource"] for p in callbacks} == {"call-progress-events"}
    assert {p["Direction"] for p in callbacks} == {"outbound-api"}
    assert "CallDuration" in callbacks[-1] and "Timestamp" in callbacks[-1]
    assert not service.bad_signatures
    # Everything the stand-in sent also validates with Twilio's own validator.
    validator = RequestValidator(TOKEN)
    for url, params, _ in twilio.callbacks:
        from ivr.emulator import sign

        assert validator.validate(url, params, sign(TOKEN, url, params))


def test_refused_twiml_ends_the_leg_with_an_error(twilio, api, service):
    service.answers["/operator"] = "<Response><Dail>typo</Dail></Response>"
    twilio.set_phone(OPERATOR, answer_after=0)
    sid = api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/operator")
    wait_until(lambda: twilio.calls[sid].finished.is_set())
    assert twilio.calls[sid].status == "completed"
    assert "12200" in twilio.calls[sid].errors[0]


# Queues: <Enqueue> callers bridged by operators' legs -------------------------------------


def test_an_operator_leg_bridges_the_queued_caller(twilio, api, service):
    queue_service(service)
    twilio.set_phone(OPERATOR, answer_after=1, talk_seconds=5, press="1")
    waiting = caller(service, twilio).start()
    assert waiting.in_queue and twilio.queues.waiting("support") == [waiting]
    assert not service.got("/enqueue-done")  # nothing dequeues a caller by itself

    sid = api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/operator")
    assert waiting.wait_for_operator(5)

    result = waiting.result
    assert result.end == "connected" and result.connected_to == OPERATOR and not result.errors
    assert "Соединяю с оператором" in result.transcript  # the <Queue url> whisper
    assert result.transcript.endswith("Спасибо")  # the <Enqueue> action after the talk
    (done,) = service.got("/enqueue-done")
    assert done["QueueResult"] == "bridged" and done["QueueSid"].startswith("QU")
    assert done["CallSid"] == result.call_sid and "QueueTime" in done
    (whisper,) = service.got("/caller-whisper")
    assert whisper["DequeingCallSid"] == sid and whisper["CallSid"] == result.call_sid

    wait_until(lambda: twilio.calls[sid].finished.is_set())
    leg = twilio.calls[sid]
    assert [item.text for item in leg.heard if item.kind == "say"] == ["Обращение номер 123"]
    assert service.got("/operator/accept")[0]["Digits"] == "1"
    (dialled,) = service.got("/operator/dial-done")
    assert dialled["DialCallStatus"] == "completed"
    assert dialled["DialCallSid"] == result.call_sid and int(dialled["DialCallDuration"]) >= 0
    assert twilio.queues.waiting("support") == []
    assert not service.bad_signatures


def test_the_longest_waiting_caller_is_bridged_first(twilio, api, service):
    queue_service(service)
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=1, press="1")
    first = caller(service, twilio, from_="+79160000001").start()
    second = caller(service, twilio, from_="+79160000002").start()
    assert twilio.queues.position(second) == (2, 2)
    api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/operator")
    assert first.wait_for_operator(5)
    assert second.in_queue and not second.result.bridged
    second.hang_up()
    assert service.got("/enqueue-done")[-1]["QueueResult"] == "hangup"


def test_an_operator_who_does_not_accept_the_whisper_bridges_nobody(twilio, api, service):
    queue_service(service)
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=100)  # presses nothing
    waiting = caller(service, twilio).start()
    sid = api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/operator")
    wait_until(lambda: twilio.calls[sid].finished.is_set())
    assert waiting.in_queue and not waiting.result.bridged
    assert [item.text for item in twilio.calls[sid].heard if item.kind == "say"][-1] == (
        "Не принято"
    )
    waiting.hang_up()


def test_a_caller_who_hangs_up_during_the_talk_ends_the_operators_dial(twilio, api, service):
    queue_service(service)
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=1000, press="1")
    waiting = caller(service, twilio).start()
    sid = api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/operator")
    wait_until(lambda: waiting.result.bridged)
    waiting.hang_up()
    wait_until(lambda: twilio.calls[sid].finished.is_set())
    assert service.got("/enqueue-done")[0]["QueueResult"] == "bridged"
    assert service.got("/operator/dial-done")[0]["DialCallStatus"] == "completed"
    assert service.got("/twilio/status")[-1]["CallStatus"] == "completed"


def test_dialling_an_empty_queue_waits_for_the_dial_timeout(twilio, api, service):
    queue_service(service)
    service.answers["/operator/accept"] = (
        '<Response><Dial action="/operator/dial-done" timeout="10">'
        "<Queue>support</Queue></Dial></Response>"
    )
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=1000, press="1")
    caller(service, twilio).start().hang_up()  # the queue exists, and is empty now
    sid = api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/operator")
    wait_until(lambda: twilio.calls[sid].finished.is_set())
    assert service.got("/operator/dial-done")[0]["DialCallStatus"] == "no-answer"


def test_a_queued_caller_is_moved_by_a_rest_update(twilio, api, service):
    queue_service(service)
    waiting = caller(service, twilio).start()
    api.update_call(waiting.result.call_sid, url=service.url + "/redirected")
    waiting.wait_for_operator(5)
    assert waiting.result.ended and waiting.result.transcript.endswith("Перевели")
    assert service.got("/enqueue-done")[0]["QueueResult"] == "redirected"
    assert twilio.queues.waiting("support") == []
    assert api.fetch_call(waiting.result.call_sid)["status"] == "completed"


# Callbacks: <Dial><Number> rings the customer -------------------------------------------


@pytest.mark.parametrize(
    ("customer", "status"),
    [({"answer_after": 1, "talk_seconds": 3}, "completed"), ({"decline": True}, "busy")],
)
def test_an_operator_leg_dials_the_customer_from_the_lines_number(
    twilio, api, service, customer, status
):
    service.answers["/callback"] = (
        f'<Response><Dial callerId="{LINE}" action="/callback/done">'
        f"<Number>{CUSTOMER}</Number></Dial></Response>"
    )
    twilio.set_phone(OPERATOR, answer_after=0, talk_seconds=1000)
    twilio.set_phone(CUSTOMER, **customer)
    sid = api.create_call(to=OPERATOR, from_=LINE, url=service.url + "/callback")
    wait_until(lambda: bool(service.got("/callback/done")))
    (done,) = service.got("/callback/done")
    assert done["DialCallStatus"] == status
    (customer_leg,) = twilio.legs_to(CUSTOMER)
    assert customer_leg.sid == done["DialCallSid"] and customer_leg.from_ == LINE
    assert customer_leg.parent_sid == sid and customer_leg.direction == "outbound-dial"
    assert customer_leg.status == status


def test_scenario_phone_tables_are_checked_strictly():
    assert phone_from({"answer_after": 2, "press": "1"}) == Phone(answer_after=2, press="1")
    with pytest.raises(ValueError, match="unknown keys"):
        phone_from({"answer": 2})
    with pytest.raises(ValueError, match="message_status"):
        phone_from({"message_status": "lost"})


# Scenarios: operators' phones in the file, the stand-in started with the Runner ----------


SCENARIO = f"""
name = "the first operator does not answer; the second one takes the caller"
time_scale = {SCALE}

[[operator]]
endpoint = "+79990000001"
no_answer = true

[[operator]]
endpoint = "+79990000002"
answer_after = 2
talk_seconds = 10
press = "1"

[[step]]
silence = true

[[step]]
wait_for_operator = 10
hears = ["Соединяю с оператором", "Спасибо"]

[expect]
end = "connected"
connected_to = "+79990000002"
queue = "support"
operator_hears = "Обращение номер 123"
"""


def test_a_scenario_rings_its_operators_through_the_stand_in(tmp_path, twilio, api, service):
    """A stand-in dispatcher (the service's is issue 11's other half): when the caller
    first hears the wait music, ring the first operator; when that leg ends unanswered
    (its status callback), ring the next."""
    from ivr.scenarios import Runner, load_scenario

    queue_service(service)
    service.answers["/twilio/voice"] = (
        "<Response><Gather><Say>Нажмите</Say></Gather>" + QUEUE_TWIML[len("<Response>") :]
    )
    operators = ["+79990000001", "+79990000002"]
    original = service.server.app.view_functions["answer"]

    def dispatching(path):
        answer = original(path)
        params = request.form.to_dict()
        if (path == "wait" and params.get("QueuePosition") == "1" and operators) or (
            path == "operator-status" and params["CallStatus"] == "no-answer" and operators
        ):
            api.create_call(
                to=operators.pop(0),
                from_=LINE,
                url=service.url + "/operator",
                status_callback=service.url + "/operator-status",
            )
        return answer

    service.server.app.view_functions["answer"] = dispatching
    path = tmp_path / "operators.toml"
    path.write_text(SCENARIO)
    with Runner(service.url, TOKEN, account_sid=ACCOUNT, twilio=twilio) as runner:
        report = runner.run(load_scenario(path))
    assert report.passed, report.failures
    assert twilio.wait_for_legs()  # the operator's leg ends after the caller's
    statuses = [p["CallStatus"] for p in service.got("/operator-status")]
    assert statuses[-1] == "completed" and "no-answer" in statuses
    assert [leg.status for leg in twilio.legs_to("+79990000001")] == ["no-answer"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[operator]]\nanswer_after = 1\n[[step]]\nsilence = true\n", "needs an endpoint"),
        ('[[operator]]\nendpoint = "+7"\nanswers = 1\n[[step]]\nsilence = true\n', "unknown"),
        ("[customer]\nmessage_status = 'lost'\n[[step]]\nsilence = true\n", "message_status"),
        ("time_scale = 0\n[[step]]\nsilence = true\n", "time_scale"),
        ("[[step]]\nwait_for_operator = true\n", "wait_for_operator"),
        ("operators = 1\n[[step]]\nsilence = true\n", "unknown keys"),
    ],
)
def test_scenario_phone_keys_are_strict(tmp_path, text, problem):
    from ivr.scenarios import ScenarioError, load_scenario

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=problem):
        load_scenario(path)


def test_a_scenario_with_operators_needs_the_stand_in(tmp_path, service):
    from ivr.scenarios import Runner, ScenarioError, load_scenario

    path = tmp_path / "operators.toml"
    path.write_text(SCENARIO)
    with Runner(service.url, TOKEN) as runner, pytest.raises(ScenarioError, match="stand-in"):
        runner.run(load_scenario(path))


def test_simulate_starts_a_stand_in_for_the_app_it_starts(tmp_path):
    from click.testing import CliRunner

    from ivr.cli import main

    path = tmp_path / "phones.toml"
    path.write_text(
        '[[operator]]\nendpoint = "+79990000001"\nanswer_after = 2\n'
        '[customer]\nmessage_status = "failed"\n'
        '[[step]]\npress = "9"\n'
    )
    result = CliRunner().invoke(main, ["simulate", "--quiet", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 passed" in result.output


def test_simulate_against_a_server_needs_the_stand_ins_port(tmp_path):
    from click.testing import CliRunner

    from ivr.cli import main

    path = tmp_path / "phones.toml"
    path.write_text('[[operator]]\nendpoint = "+79990000001"\n[[step]]\npress = "9"\n')
    result = CliRunner().invoke(
        main, ["simulate", "--base-url", "http://127.0.0.1:9", "--token", "t", str(path)]
    )
    assert result.exit_code == 1 and "--twilio-port" in result.output
