"""The shipped scenario suite, through the emulator and the real HTTP server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.scenarios import ScenarioError, format_report, load_scenario
from ivr.tickets import is_valid_ticket_number

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.toml"))
# Against a plain `ivr serve` (no REST stand-in, its own settings): the scenarios without
# operators' phones or [server] settings.
PLAIN = [
    path
    for path in SCENARIOS
    if not (scenario := load_scenario(path)).needs_twilio and not scenario.server
]
MAIN_PATH = Path(__file__).parent / "scenarios" / "domestic_order_request.toml"


@pytest.mark.parametrize("path", SCENARIOS, ids=[path.stem for path in SCENARIOS])
def test_shipped_scenario(path, run_scenario):
    report, calls = run_scenario(path)
    assert report.passed, format_report(report)
    assert len(calls) == len(report.calls)
    for outcome in report.calls:
        record = next(call for call in calls if call["call_sid"] == outcome.result.call_sid)
        assert record["status"] == "completed"
        if outcome.ticket and outcome.plan.expect.get("ticket"):
            assert record["ticket_number"] == outcome.ticket
            assert is_valid_ticket_number(outcome.ticket)


def test_the_suite_covers_every_branch():
    steps = set()
    for path in SCENARIOS:
        scenario = load_scenario(path)
        for call in scenario.calls:
            steps.add((call.to, call.at >= "2026-11-26T20" or call.at < "2026-11-26T08"))
    assert ("+78002345555", False) in steps and ("+78002345555", True) in steps
    assert ("+74952321000", False) in steps and ("+74952321000", True) in steps


def test_a_failed_expectation_fails_the_scenario(tmp_path, run_scenario):
    text = MAIN_PATH.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("24 часа", "25 часов"))
    report, _ = run_scenario(bad)
    assert not report.passed
    assert "25 часов" in report.failures[0]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[[step]]\npress = '1'\nsilence = true\n", "one action per step"),
        ("[[step]]\nshout = 'hi'\n", "unknown keys"),
        ("line = 'mars'\n[[step]]\npress = '1'\n", "line must be"),
        ("[[step]]\nspeak = 'missing.wav'\n", "audio file not found"),
        ("[expect]\nwhere = 'x'\n", "unknown expectations"),
        ("name = 'x'\n", "no steps"),
        ("[[step]\n", "not valid TOML"),
    ],
)
def test_bad_scenarios_are_refused_clearly(tmp_path, content, message):
    path = tmp_path / "scenario.toml"
    path.write_text(content)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


@pytest.mark.slow
def test_ivr_simulate_runs_the_suite_green_against_ivr_serve(tmp_path):
    from test_server import free_port, wait_for

    db_path = str(tmp_path / "ivr.sqlite3")
    env = {
        **os.environ,
        "IVR_DB": db_path,
        "IVR_TWILIO_AUTH_TOKEN": "suite-token",
        "IVR_ALLOW_SIMULATED_TIME": "1",
    }
    subprocess.run(
        [sys.executable, "-m", "ivr.cli", "init-db", "--demo"],
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = wait_for(f"http://127.0.0.1:{port}", server)
        result = subprocess.run(
            [sys.executable, "-m", "ivr.cli", "simulate", "--base-url", base, *map(str, PLAIN)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        assert f"{len(PLAIN)} passed, 0 failed" in result.stdout
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "ivr.cli",
                "simulate",
                "--base-url",
                base,
                "--load",
                "50",
                "--concurrency",
                "50",
                "--json",
                *map(str, PLAIN),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        summary = json.loads(load.stdout)
        assert load.returncode == 0, load.stdout
        assert summary["completed"] == 50 and summary["failed"] == 0
        assert summary["tickets"] == summary["distinct_tickets"] > 0
        assert summary["latency_ms"]["p99"] > 0
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
def test_ivr_simulate_starts_the_app_itself_and_fails_on_a_broken_expectation(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MAIN_PATH.read_text().replace("24 часа", "25 часов"))
    good = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "simulate", "--quiet", str(MAIN_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0 and "1 passed, 0 failed" in good.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "simulate", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 1 and "FAILED: step 5: expected to hear" in broken.stdout


@pytest.mark.slow
def test_ivr_call_lets_a_caller_walk_the_menu():
    keys = "\n".join(["1", "4207315890", "1", "1", "", ""]) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "call", "--at", "2026-11-26T12:00:00+03:00"],
        input=keys,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IVR: Здравствуйте!" in result.stdout
    assert "Вы ввели номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in result.stdout
    assert "[dial: +79990000001]" in result.stdout
    assert "call ended: connected; ticket " in result.stdout


def test_a_simulated_call_keeps_its_instant_for_every_webhook(run_scenario, tmp_path):
    """Callback time and due dates come from the call's own instant, not the real clock."""
    path = tmp_path / "closed.toml"
    path.write_text(
        (Path(__file__).parent / "scenarios" / "closed_callback_request.toml")
        .read_text()
        .replace("2026-11-26T21:30:00+03:00", "2030-03-04T22:00:00+03:00")
        .replace("27 ноября в 8:00", "5 марта в 8:00")
    )
    report, calls = run_scenario(path)
    assert report.passed, format_report(report)
    assert calls[0]["started_at"].startswith("2030-03-04T19:00")
