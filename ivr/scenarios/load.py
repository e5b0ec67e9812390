"""Load mode: many scenario runs at once, with latency percentiles and ticket counts."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ivr.scenarios.files import CallPlan, Scenario, Step
from ivr.scenarios.running import CallOutcome, Runner


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
