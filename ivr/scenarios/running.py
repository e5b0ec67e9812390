"""Running scenarios: each call played on the emulator, checked, and reported.

`Runner` plays a `Scenario`'s calls in order against a server (over HTTP), with a media
host and, when the scenario has phones, the REST stand-in; `play_call` performs a call's
steps, `check_call` its expectations; `format_report` prints a `ScenarioReport`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from ivr.emulator import (
    CallResult,
    EmulatedCall,
    EmulatedRest,
    HttpTransport,
    MediaServer,
    Transport,
)
from ivr.emulator.rest import TwilioStandIn
from ivr.scenarios.files import CallPlan, Scenario, ScenarioError, Step, as_list
from ivr.tickets import is_valid_ticket_number

SPOKEN_TICKET = re.compile(r"(\d) (\d) (\d), (\d) (\d) (\d), (\d) (\d) (\d)(?! \d)")


@dataclass
class CallOutcome:
    """One call of a scenario as it went."""

    plan: CallPlan
    result: CallResult
    ticket: str | None
    record: dict[str, Any] | None
    failures: list[str]


@dataclass
class ScenarioReport:
    """How a scenario went."""

    scenario: Scenario
    calls: list[CallOutcome]
    seconds: float

    @property
    def failures(self) -> list[str]:
        """Every failed expectation, prefixed with its call."""
        return [f"{call.plan.name}: {failure}" for call in self.calls for failure in call.failures]

    @property
    def passed(self) -> bool:
        """Whether every expectation held."""
        return not self.failures


def heard_ticket(result: CallResult) -> str | None:
    """The last ticket number the caller heard (read as three groups of three digits)."""
    found = SPOKEN_TICKET.findall(result.transcript)
    return "".join(found[-1]) if found else None


class _Variables(dict):
    def __missing__(self, key: str) -> str:
        raise ScenarioError(f"no value for {{{key}}} yet (it comes from an earlier call)")


def _fill(text: str, variables: dict[str, str]) -> str:
    return str(text).format_map(_Variables(variables))


def _check_window(step: Step, said: str, failures: list[str], where: str) -> None:
    for text in step.hears:
        if text not in said:
            failures.append(f"{where}: expected to hear {text!r}; heard {said!r}")
    for pattern in step.hears_regex:
        if not re.search(pattern, said):
            failures.append(f"{where}: expected to hear /{pattern}/; heard {said!r}")
    for text in step.not_hears:
        if text in said:
            failures.append(f"{where}: did not expect {text!r}; heard {said!r}")


def _said_since(result: CallResult, start: int) -> str:
    return "\n".join(h.text for h in result.heard[start:] if h.kind in ("say", "queue"))


def play_call(plan: CallPlan, call: EmulatedCall, variables: dict[str, str]) -> list[str]:
    """Perform a call's steps on the emulator; returns the failed step expectations."""
    failures: list[str] = []
    window = 0
    call.start()
    for number, step in enumerate(plan.steps, start=1):
        where = f"step {number}"
        if step.action is not None:
            window = len(call.result.heard)
            if call.result.ended:
                failures.append(f"{where}: the call had already ended")
                break
            try:
                if step.action == "press":
                    call.press(_fill(step.value, variables))
                elif step.action == "silence":
                    call.silence()
                elif step.action == "speak":
                    call.speak(
                        step.value, finish_key=step.then_press, during_prompt=step.during_prompt
                    )
                elif step.action == "wait_in_queue":
                    call.wait_in_queue()
                elif step.action == "wait_for_operator":
                    if call.twilio is None:
                        raise ScenarioError(
                            f"{where}: wait_for_operator needs the REST stand-in "
                            "(give the scenario [[operator]] phones)"
                        )
                    call.wait_for_operator(float(step.value))
                elif step.action == "hang_up":
                    call.hang_up()
                elif step.action == "fallback":
                    call.fallback(str(step.value) if step.value is not True else "11200")
            except RuntimeError as error:
                failures.append(f"{where} ({step.action}): {error}")
                break
        _check_window(step, _said_since(call.result, window), failures, where)
    call.wait_for_callbacks()
    if not call.result.ended and call.result.connected_to is None:
        call.hang_up()  # a scenario that stops mid-menu: the caller hangs up
    return failures


def check_call(
    plan: CallPlan,
    result: CallResult,
    record: dict | None,
    ticket: str | None,
    variables: dict[str, str],
    twilio: TwilioStandIn | None = None,
    operators: tuple[str, ...] = (),
) -> list[str]:
    """Check a finished call against its [expect] table (`twilio`: the REST stand-in that
    rang the `operators`' phones and recorded the messages)."""
    failures = list(result.errors)
    expect = plan.expect
    if twilio is not None:
        heard = "\n".join(
            item.text
            for endpoint in operators
            for leg in twilio.legs_to(endpoint)
            for item in leg.heard
            if item.kind == "say"
        )
        for text in as_list(expect.get("operator_hears")):
            text = _fill(text, variables)
            if text not in heard:
                failures.append(f"expected an operator to hear {text!r}; they heard {heard!r}")
        texts = _messages_to(twilio, plan.from_, bool(expect.get("sms")))
        for text in as_list(expect.get("sms")):
            text = _fill(text, variables)
            if text not in texts:
                failures.append(f"expected an SMS to {plan.from_} with {text!r}; got {texts!r}")
    elif "operator_hears" in expect or "sms" in expect:
        failures.append("operator_hears / sms need the REST stand-in")
    if "end" in expect and result.end != expect["end"]:
        failures.append(f"expected the call to end {expect['end']!r}, it ended {result.end!r}")
    if "connected_to" in expect and result.connected_to != expect["connected_to"]:
        failures.append(
            f"expected a connection to {expect['connected_to']!r}, got {result.connected_to!r}"
        )
    if "queue" in expect and result.queue != expect["queue"]:
        failures.append(f"expected queue {expect['queue']!r}, got {result.queue!r}")
    if expect.get("ticket") is True:
        if ticket is None or not is_valid_ticket_number(ticket):
            failures.append(f"expected a valid ticket number to be read out, heard {ticket!r}")
    elif expect.get("ticket") is False and ticket is not None:
        failures.append(f"expected no ticket, heard {ticket}")
    step = Step(
        None, hears=as_list(expect.get("hears")), not_hears=as_list(expect.get("not_hears"))
    )
    _check_window(step, result.transcript, failures, "call")
    wanted = expect.get("record", {})
    empty = as_list(expect.get("record_empty"))
    if wanted or empty:
        if record is None:
            failures.append("expected a call record, found none (is --db the server's database?)")
        else:
            for name, value in wanted.items():
                value = _fill(value, variables) if isinstance(value, str) else value
                if record.get(name) != value:
                    failures.append(f"record {name}: expected {value!r}, got {record.get(name)!r}")
            for name in empty:
                if record.get(name) not in (None, ""):
                    failures.append(f"record {name}: expected none, got {record.get(name)!r}")
            if ticket and record.get("ticket_number") not in (None, ticket):
                failures.append(
                    f"the caller heard ticket {ticket} but the record has "
                    f"{record.get('ticket_number')}"
                )
    return failures


def _messages_to(twilio: TwilioStandIn, number: str, expected: bool, wait: float = 5.0) -> str:
    """The texts of the messages sent to `number`; when one is expected, wait a little for
    it (the service sends SMS off the webhook path, from the dispatcher's pass)."""
    deadline = time.monotonic() + (wait if expected else 0)
    while True:
        texts = "\n".join(m.body for m in list(twilio.messages) if m.to == number)
        if texts or time.monotonic() >= deadline:
            return texts
        time.sleep(0.05)


class Runner:
    """Runs scenarios against a base URL, with a media host for recordings and, when the
    service's REST requests go to it, the Twilio REST stand-in (`twilio`) whose phones the
    scenarios set."""

    def __init__(
        self,
        base_url: str,
        auth_token: str,
        db_path: str | None = None,
        transport: Transport | None = None,
        deliveries: int = 1,
        account_sid: str | None = None,
        think_time: float = 0.0,
        rest: EmulatedRest | None = None,
        twilio: TwilioStandIn | None = None,
    ):
        self.twilio = twilio
        self.base_url = base_url
        # The REST stand-in the server was given (stream mode moves calls with it); with one,
        # the server is ours on loopback, so its ws:// media socket is accepted.
        self.rest = rest
        self.account_sid = account_sid  # the server's own, which its recording fetcher expects
        self.auth_token = auth_token
        self.db_path = db_path
        self.transport = transport or HttpTransport()
        self.deliveries = deliveries
        self.think_time = think_time  # seconds each caller listens before answering
        self.media = MediaServer()

    def close(self) -> None:
        """Stop the media host."""
        self.media.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def record_for(self, call_sid: str) -> dict[str, Any] | None:
        """The call as `ivr calls list --json` shows it, if the database is at hand."""
        if not self.db_path:
            return None
        from ivr import db as database
        from ivr.call_log import call_record
        from ivr.db import calls as call_store

        with database.connect(self.db_path) as db:
            row = call_store.get_call(db, call_sid)
        return call_record(row) if row else None

    def run(self, scenario: Scenario) -> ScenarioReport:
        """Play every call of the scenario and check it."""
        started = time.perf_counter()
        variables: dict[str, str] = {}
        outcomes: list[CallOutcome] = []
        live: list[EmulatedCall] = []
        if scenario.needs_twilio:
            if self.twilio is None:
                raise ScenarioError(
                    f"{scenario.path}: operators' phones need the REST stand-in "
                    "(`ivr simulate` starts one when the app runs here, or --twilio-port)"
                )
            self._set_phones(scenario)
        for plan in scenario.calls:
            call = EmulatedCall(
                self.transport,
                self.base_url,
                self.auth_token,
                to=plan.to,
                from_=plan.from_,
                dial_status=plan.dial_status,
                empty_recording=plan.empty_recording,
                at=plan.at,
                media=self.media,
                recording_not_ready_fetches=plan.recording_not_ready_fetches,
                deliveries=self.deliveries,
                account_sid=self.account_sid,
                think_time=self.think_time,
                rest=self.rest,
                twilio=self.twilio,
                loopback_streams=self.rest is not None or self.twilio is not None,
            )
            try:
                failures = play_call(plan, call, variables)
            except ScenarioError as error:
                failures = [str(error)]
            if not call.result.ended:
                live.append(call)  # connected to an operator: stays on the line for now
            ticket = heard_ticket(call.result)
            if ticket:
                variables["ticket"] = ticket
            record = self.record_for(call.result.call_sid)
            if record and record.get("order_number"):
                variables["order"] = record["order_number"]
            failures += check_call(
                plan, call.result, record, ticket, variables, self.twilio, tuple(scenario.operators)
            )
            outcomes.append(CallOutcome(plan, call.result, ticket, record, failures))
        for call in live:
            call.hang_up()
        return ScenarioReport(scenario, outcomes, time.perf_counter() - started)

    def _set_phones(self, scenario: Scenario) -> None:
        """The scenario's operators' and customers' phones, on the stand-in's clock."""
        self.twilio.time_scale = scenario.time_scale
        self.twilio.phones.update(scenario.operators)
        if scenario.customer is not None:
            for plan in scenario.calls:
                self.twilio.phones[plan.from_] = scenario.customer


def format_report(report: ScenarioReport, verbose: bool = True) -> str:
    """A readable transcript of each call and the verdict."""
    lines = [
        f"== {report.scenario.name} ({report.scenario.path}) "
        f"{'PASS' if report.passed else 'FAIL'} in {report.seconds:.2f}s"
    ]
    if report.scenario.description:
        lines.append(f"   {report.scenario.description}")
    for outcome in report.calls:
        result = outcome.result
        lines.append(
            f"-- {outcome.plan.name}: {outcome.plan.from_} -> {outcome.plan.to}"
            + (f" at {outcome.plan.at}" if outcome.plan.at else "")
        )
        if verbose:
            for item in result.heard:
                lines.append(_format_heard(item.kind, item.text))
        record = outcome.record or {}
        lines.append(
            f"   end: {result.end}; ticket: {outcome.ticket or '-'}; "
            f"outcome: {record.get('outcome', '-')}; operator: {record.get('operator_name', '-')}"
        )
        lines.extend(f"   FAILED: {failure}" for failure in outcome.failures)
    return "\n".join(lines)


def _format_heard(kind: str, text: str) -> str:
    labels = {
        "say": "IVR",
        "queue": "IVR (queue)",
        "play": "IVR plays",
        "keys": "caller presses",
        "silence": "caller",
        "speak": "caller says",
        "record": "IVR records",
        "dial": "connected to",
        "bridge": "operator on",
        "enqueue": "queued in",
        "hangup": "call ends",
        "error": "ERROR",
    }
    if kind == "silence":
        text = "(silence)"
    return f"   {labels.get(kind, kind):>15}: {text}".rstrip()
