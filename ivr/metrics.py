"""Counters an operator can scrape: calls by outcome, recognitions by result, webhook latency.

Kept in memory per process and rendered in Prometheus' text format at /metrics. Call
outcomes come from the database (they survive restarts); the rest counts since start.
"""

from __future__ import annotations

import threading
from collections import defaultdict

# Upper bounds (seconds) of the webhook latency histogram buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Thread-safe counters and a latency histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.webhooks: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)

    def observe_webhook(self, kind: str, status: int, seconds: float) -> None:
        """Count one answered webhook and its latency."""
        with self._lock:
            self.webhooks[(kind, status)] += 1
            self.latency_sum[kind] += seconds
            self.latency_count[kind] += 1
            buckets = self.buckets[kind]
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1

    def count_error(self, kind: str) -> None:
        """Count a failure that was answered with a safe fallback."""
        with self._lock:
            self.errors[kind] += 1

    def render(self, outcomes: dict[str, int], recognitions: dict[str, int]) -> str:
        """The Prometheus text exposition."""
        lines = [
            "# HELP ivr_calls_total Calls on record by outcome.",
            "# TYPE ivr_calls_total gauge",
        ]
        for outcome, count in sorted(outcomes.items()):
            lines.append(f'ivr_calls_total{{outcome="{outcome}"}} {count}')
        lines += [
            "# HELP ivr_recognitions_total Speech recognitions on record by result.",
            "# TYPE ivr_recognitions_total gauge",
        ]
        for result, count in sorted(recognitions.items()):
            lines.append(f'ivr_recognitions_total{{result="{result}"}} {count}')
        with self._lock:
            lines += [
                "# HELP ivr_webhooks_total Webhooks answered since start, by kind and status.",
                "# TYPE ivr_webhooks_total counter",
            ]
            for (kind, status), count in sorted(self.webhooks.items()):
                lines.append(f'ivr_webhooks_total{{kind="{kind}",status="{status}"}} {count}')
            lines += [
                "# HELP ivr_webhook_seconds Webhook response time.",
                "# TYPE ivr_webhook_seconds histogram",
            ]
            for kind in sorted(self.latency_count):
                for bound, count in zip(LATENCY_BUCKETS, self.buckets[kind], strict=True):
                    lines.append(
                        f'ivr_webhook_seconds_bucket{{kind="{kind}",le="{bound}"}} {count}'
                    )
                total = self.latency_count[kind]
                lines.append(f'ivr_webhook_seconds_bucket{{kind="{kind}",le="+Inf"}} {total}')
                lines.append(
                    f'ivr_webhook_seconds_sum{{kind="{kind}"}} {self.latency_sum[kind]:.6f}'
                )
                lines.append(f'ivr_webhook_seconds_count{{kind="{kind}"}} {total}')
            lines += [
                "# HELP ivr_webhook_failures_total Webhooks answered with the safe fallback TwiML.",
                "# TYPE ivr_webhook_failures_total counter",
            ]
            for kind, count in sorted(self.errors.items()):
                lines.append(f'ivr_webhook_failures_total{{kind="{kind}"}} {count}')
        return "\n".join(lines) + "\n"
