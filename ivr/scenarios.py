"""Scenario files: whole calls described as data, run through the emulator, checked, reported.

A scenario (TOML) describes one caller, or several `[[call]]`s in order (a later call can
use `{ticket}` / `{order}` from an earlier one). Each `[[step]]` does at most one thing —
`press`, `silence`, `speak` (an audio file; `then_press` ends the recording with a key),
`hang_up`, `fallback`, `wait_in_queue` (stay on hold for another round of the queue's wait
music) — and may check what the IVR said in answer: `hears` (substrings), `hears_regex`,
`not_hears`. `[expect]` checks where the call ended and what is on record. See
tests/scenarios/ for the shipped suite.

Operators' phones (`[[operator]]`, by endpoint) and the customers' (`[customer]`, the
callers' own numbers, rung back by callbacks) are played by the REST stand-in
(ivr/emulator/rest.py): a scenario that has them needs a Runner with `twilio=`, and the
service must send its REST requests there (IVR_TWILIO_API_URL), which `ivr simulate` sets
up by itself. `wait_for_operator = SECONDS` keeps a queued caller on hold until an
operator's leg bridges them and the talk is over.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.config import Settings
from ivr.emulator import (
    CallResult,
    EmulatedCall,
    EmulatedRest,
    HttpTransport,
    MediaServer,
    Transport,
)
from ivr.emulator.caller import DIAL_STATUSES, EMPTY_RECORDING_MODES
from ivr.emulator.rest import Phone, TwilioStandIn, phone_from
from ivr.tickets import is_valid_ticket_number
from ivr.vocabulary import Line

# The number each line is called on unless a scenario says `to` (the service's defaults).
LINES = {
    Line.DOMESTIC: Settings.domestic_number,
    Line.INTERNATIONAL: Settings.international_number,
}
ACTIONS = ("press", "silence", "speak", "hang_up", "fallback", "wait_in_queue", "wait_for_operator")
STEP_KEYS = set(ACTIONS) | {"hears", "hears_regex", "not_hears", "then_press", "during_prompt"}
# Twilio's quirks a scenario may state (see ivr/emulator/caller.py): how the operator's leg
# of a <Dial> ends, and whether an empty recording is sent to the action (today's <Record>
# page) or skipped (the older page).
CALL_DEFAULTS = {"line", "to", "from", "at", "dial_status", "empty_recording"}
CALL_KEYS = {
    *CALL_DEFAULTS,
    "step",
    "expect",
    "recording_not_ready_fetches",
    "name",
}
EXPECT_KEYS = {
    "operator_hears",
    "sms",
    "end",
    "connected_to",
    "queue",
    "ticket",
    "record",
    "record_empty",
    "hears",
    "not_hears",
}
# The top level only: the phones the REST stand-in rings, and its clock.
PHONE_KEYS = {"operator", "customer", "time_scale", "server"}
SPOKEN_TICKET = re.compile(r"(\d) (\d) (\d), (\d) (\d) (\d), (\d) (\d) (\d)(?! \d)")


class ScenarioError(ValueError):
    """A scenario file that cannot be run as written."""


@dataclass
class Step:
    """One thing the caller does, and what the IVR should say in answer."""

    action: str | None
    value: Any = None
    hears: list[str] = field(default_factory=list)
    hears_regex: list[str] = field(default_factory=list)
    not_hears: list[str] = field(default_factory=list)
    then_press: str = ""  # after `speak`: the key that ends the recording
    during_prompt: bool = False  # `speak` at a streaming prompt while it still plays


@dataclass
class CallPlan:
    """One caller's call in a scenario."""

    name: str
    to: str
    from_: str
    at: str | None
    dial_status: str
    empty_recording: str
    recording_not_ready_fetches: int
    steps: list[Step]
    expect: dict[str, Any]


@dataclass
class Scenario:
    """A scenario file, parsed."""

    name: str
    path: Path
    description: str
    calls: list[CallPlan]
    operators: dict[str, Phone] = field(default_factory=dict)  # endpoint -> phone
    customer: Phone | None = None  # the callers' own phones, when the service calls back
    time_scale: float = 1.0  # the stand-in's seconds (phones, operators' TwiML)
    # IVR_* settings for an app started for this scenario (`[server]`), e.g. a short
    # IVR_QUEUE_MAX_WAIT; a running server (--base-url) keeps its own.
    server: dict[str, str] = field(default_factory=dict)

    @property
    def needs_twilio(self) -> bool:
        """Whether the scenario has phones for the REST stand-in to ring."""
        return bool(self.operators) or self.customer is not None


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


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def _parse_step(raw: dict[str, Any], where: str) -> Step:
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    actions = [name for name in ACTIONS if name in raw]
    if len(actions) > 1:
        raise ScenarioError(f"{where}: one action per step, got {actions}")
    action = actions[0] if actions else None
    value = raw.get(action) if action else None
    if action == "wait_for_operator" and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        raise ScenarioError(f"{where}: wait_for_operator takes the most seconds to wait")
    if action == "press" and not re.fullmatch(r"[0-9*#{}a-z_]+", str(value)):
        raise ScenarioError(f"{where}: press takes keys 0-9 * #, got {value!r}")
    if "then_press" in raw and (
        action != "speak" or not re.fullmatch(r"[0-9*#]", raw["then_press"])
    ):
        raise ScenarioError(f"{where}: then_press is one key (0-9 * #) after speak")
    return Step(
        action=action,
        value=value,
        hears=_as_list(raw.get("hears")),
        hears_regex=_as_list(raw.get("hears_regex")),
        not_hears=_as_list(raw.get("not_hears")),
        then_press=str(raw.get("then_press", "")),
        during_prompt=bool(raw.get("during_prompt", False)),
    )


def _parse_call(raw: dict[str, Any], defaults: dict[str, Any], where: str, base: Path) -> CallPlan:
    merged = {**defaults, **raw}
    unknown = set(raw) - CALL_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    line = merged.get("line", "domestic")
    if line not in LINES:
        raise ScenarioError(f"{where}: line must be domestic or international, got {line!r}")
    expect = dict(merged.get("expect", {}))
    if set(expect) - EXPECT_KEYS:
        raise ScenarioError(f"{where}: unknown expectations {sorted(set(expect) - EXPECT_KEYS)}")
    steps = [
        _parse_step(step, f"{where} step {number}")
        for number, step in enumerate(raw.get("step", []), start=1)
    ]
    for step in steps:
        if step.action == "speak":
            audio = (base / str(step.value)).resolve()
            if not audio.is_file():
                raise ScenarioError(f"{where}: audio file not found: {step.value}")
            step.value = audio
    return CallPlan(
        name=str(merged.get("name", where)),
        to=str(merged.get("to", LINES[line])),
        from_=str(merged.get("from", "+79161234567")),
        at=str(merged["at"]) if merged.get("at") else None,
        dial_status=_choice(merged, "dial_status", "completed", DIAL_STATUSES, where),
        empty_recording=_choice(merged, "empty_recording", "action", EMPTY_RECORDING_MODES, where),
        recording_not_ready_fetches=int(merged.get("recording_not_ready_fetches", 0)),
        steps=steps,
        expect=expect,
    )


def _choice(merged: dict, key: str, default: str, choices: tuple[str, ...], where: str) -> str:
    value = str(merged.get(key, default))
    if value not in choices:
        raise ScenarioError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{path}: not valid TOML: {error}") from None
    name = str(data.get("name", path.stem))
    base = path.parent
    if "call" in data:
        unknown = set(data) - CALL_DEFAULTS - PHONE_KEYS - {"call", "name", "description"}
        if unknown:
            raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}")
    operators, customer, time_scale = _parse_phones(data, path)
    defaults = {k: data[k] for k in CALL_DEFAULTS if k in data}
    if "call" in data:
        raws = data["call"]
        calls = [
            _parse_call(raw, defaults, f"call {number}", base)
            for number, raw in enumerate(raws, start=1)
        ]
    else:
        unknown = set(data) - CALL_KEYS - PHONE_KEYS - {"description"}
        if unknown:
            raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}")
        single = {k: v for k, v in data.items() if k in CALL_KEYS}
        calls = [_parse_call(single, {}, "call", base)]
    if not calls or not any(call.steps or call.expect for call in calls):
        raise ScenarioError(f"{path}: no steps or expectations")
    return Scenario(
        name=name,
        path=path,
        description=str(data.get("description", "")),
        calls=calls,
        operators=operators,
        customer=customer,
        time_scale=time_scale,
        server=_parse_server(data, path),
    )


def server_overrides(scenario: Scenario) -> dict[str, Any]:
    """The scenario's `[server]` settings as Settings fields (what differs from defaults)."""
    from ivr.config import load_settings

    if not scenario.server:
        return {}
    configured, default = load_settings(scenario.server), load_settings({})
    return {
        name: value for name, value in vars(configured).items() if value != getattr(default, name)
    }


def _parse_server(data: dict[str, Any], path: Path) -> dict[str, str]:
    """The `[server]` table: IVR_* settings as the environment would give them."""
    raw = data.get("server", {})
    if not isinstance(raw, dict) or not all(str(key).startswith("IVR_") for key in raw):
        raise ScenarioError(f"{path}: [server] is a table of IVR_* settings")
    return {str(key): str(value) for key, value in raw.items()}


def _parse_phones(data: dict[str, Any], path: Path) -> tuple[dict[str, Phone], Phone | None, float]:
    """The `[[operator]]` phones by endpoint, the `[customer]` phone, the `time_scale`."""
    operators: dict[str, Phone] = {}
    raw_operators = data.get("operator", [])
    if not isinstance(raw_operators, list):
        raise ScenarioError(f"{path}: operators are [[operator]] tables")
    for number, raw in enumerate(raw_operators, start=1):
        where = f"{path}: operator {number}"
        if not isinstance(raw, dict) or not raw.get("endpoint"):
            raise ScenarioError(f"{where}: needs an endpoint (the number the service rings)")
        behaviour = {key: value for key, value in raw.items() if key != "endpoint"}
        try:
            operators[str(raw["endpoint"])] = phone_from(behaviour, where)
        except ValueError as error:
            raise ScenarioError(str(error)) from None
    customer = None
    if "customer" in data:
        if not isinstance(data["customer"], dict):
            raise ScenarioError(f"{path}: [customer] is a table")
        try:
            customer = phone_from(data["customer"], f"{path}: customer")
        except ValueError as error:
            raise ScenarioError(str(error)) from None
    time_scale = data.get("time_scale", 1.0)
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) or time_scale <= 0:
        raise ScenarioError(f"{path}: time_scale is a positive number, got {time_scale!r}")
    return operators, customer, float(time_scale)


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
        for text in _as_list(expect.get("operator_hears")):
            text = _fill(text, variables)
            if text not in heard:
                failures.append(f"expected an operator to hear {text!r}; they heard {heard!r}")
        texts = _messages_to(twilio, plan.from_, bool(expect.get("sms")))
        for text in _as_list(expect.get("sms")):
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
        None, hears=_as_list(expect.get("hears")), not_hears=_as_list(expect.get("not_hears"))
    )
    _check_window(step, result.transcript, failures, "call")
    wanted = expect.get("record", {})
    empty = _as_list(expect.get("record_empty"))
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


# Load ------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class LoadReport:
    """What a load run measured."""

    calls: int
    completed: int
    failed: int
    seconds: float
    latencies: list[float]
    failures: list[str]
    tickets: list[str]
    outcomes: list[CallOutcome] = field(default_factory=list)  # every call, for deeper checks

    def summary(self) -> dict[str, Any]:
        """Counts and webhook latency percentiles in milliseconds."""
        millis = [value * 1000 for value in self.latencies]
        return {
            "calls": self.calls,
            "completed": self.completed,
            "failed": self.failed,
            "webhooks": len(millis),
            "seconds": round(self.seconds, 2),
            "latency_ms": {
                "p50": round(percentile(millis, 0.50), 1),
                "p95": round(percentile(millis, 0.95), 1),
                "p99": round(percentile(millis, 0.99), 1),
                "max": round(max(millis, default=0.0), 1),
                "mean": round(statistics.fmean(millis), 1) if millis else 0.0,
            },
            "tickets": len(self.tickets),
            "distinct_tickets": len(set(self.tickets)),
        }


def run_load(runner: Runner, scenarios: list[Scenario], calls: int, concurrency: int) -> LoadReport:
    """Run `calls` scenario runs, `concurrency` at a time, cycling through the scenarios.

    A run completes when every webhook answered 200 and the call ended where the scenario
    says; operator names are not compared under load (assignment depends on timing).
    """
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    tickets: list[str] = []
    outcomes: list[CallOutcome] = []
    completed = 0

    def one(index: int) -> None:
        nonlocal completed
        scenario = scenarios[index % len(scenarios)]
        report = runner.run(_for_load(scenario, index))
        with lock:
            outcomes.extend(report.calls)
            for outcome in report.calls:
                latencies.extend(seconds for _, seconds in outcome.result.latencies)
                # The ticket this call created: from its record, else the one it was told
                # (a status call hears an older ticket, which is not a new one).
                created = (
                    (outcome.record or {}).get("ticket_number")
                    if outcome.record
                    else (outcome.ticket if outcome.plan.expect.get("ticket") else None)
                )
                if created:
                    tickets.append(created)
            if report.passed:
                completed += 1
            else:
                failures.extend(f"run {index} {scenario.name}: {f}" for f in report.failures)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(calls)))
    return LoadReport(
        calls,
        completed,
        calls - completed,
        time.perf_counter() - started,
        latencies,
        failures,
        tickets,
        outcomes,
    )


def _for_load(scenario: Scenario, index: int) -> Scenario:
    """The scenario with per-run caller numbers and only timing-independent expectations.

    Under load an operator may be busy with another run, so a call that would be connected
    is queued instead: both are right. What must hold: every webhook answers, the call
    ends, and a ticket is read out where the scenario expects one.
    """
    numbers: dict[str, str] = {}
    calls = []
    for plan in scenario.calls:
        caller = numbers.setdefault(plan.from_, f"+7917{index:06d}{len(numbers) % 10}")
        expect = {k: v for k, v in plan.expect.items() if k == "ticket"}
        steps = [
            Step(
                step.action,
                step.value,
                then_press=step.then_press,
                during_prompt=step.during_prompt,
            )
            for step in plan.steps
        ]
        calls.append(
            CallPlan(
                plan.name,
                plan.to,
                caller,
                plan.at,
                plan.dial_status,
                plan.empty_recording,
                plan.recording_not_ready_fetches,
                steps,
                expect,
            )
        )
    return Scenario(
        scenario.name,
        scenario.path,
        scenario.description,
        calls,
        scenario.operators,
        scenario.customer,
        scenario.time_scale,
        scenario.server,
    )
