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

The package: `files` (reading a scenario file), `running` (playing, checking, reporting),
`load` (load mode).
"""

from ivr.scenarios.files import (
    LINES,
    CallPlan,
    Scenario,
    ScenarioError,
    Step,
    load_scenario,
    server_overrides,
)
from ivr.scenarios.load import LoadReport, percentile, run_load
from ivr.scenarios.running import (
    CallOutcome,
    Runner,
    ScenarioReport,
    check_call,
    format_report,
    heard_ticket,
    play_call,
)

__all__ = [
    "LINES",
    "CallOutcome",
    "CallPlan",
    "LoadReport",
    "Runner",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "Step",
    "check_call",
    "format_report",
    "heard_ticket",
    "load_scenario",
    "percentile",
    "play_call",
    "run_load",
    "server_overrides",
]
