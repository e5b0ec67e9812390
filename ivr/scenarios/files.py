"""Scenario files: reading and checking the TOML a scenario is written in.

`load_scenario` turns a file into a `Scenario` (its `CallPlan`s, their `Step`s and
expectations, the phones the REST stand-in plays), refusing with a `ScenarioError` any key
or value it does not know. The format is described in ivr/scenarios/__init__.py.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.config import Settings
from ivr.emulator.caller import DIAL_STATUSES, EMPTY_RECORDING_MODES
from ivr.emulator.rest import Phone, phone_from
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


def as_list(value: Any) -> list[str]:
    """A scenario value that may be one string or a list of them, as a list."""
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
        hears=as_list(raw.get("hears")),
        hears_regex=as_list(raw.get("hears_regex")),
        not_hears=as_list(raw.get("not_hears")),
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
