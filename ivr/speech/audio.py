"""Turn any recording into mono 16-bit PCM at the speech model's rate (the only pydub user)."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydub import AudioSegment
from pydub.utils import make_chunks

DEFAULT_MODEL_SAMPLE_RATE = 16000
# ffmpeg gets this long per call; decoding two minutes of telephone audio takes well under 1 s.
FFMPEG_TIMEOUT_SECONDS = 30.0
SILENCE_WINDOW_MS = 100
# A click or a line pop is shorter than this; "да" or "no" is longer.
MIN_SOUND_MS = 200
SAMPLE_WIDTH_BYTES = 2


class AudioError(Exception):
    """A recording that cannot or will not become PCM; ``reason`` says why in one word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        """Return the reason, with the detail when there is one."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class PcmAudio:
    """Decoded audio ready for the recogniser."""

    samples: bytes  # mono s16le
    sample_rate: int
    duration_seconds: float


def to_model_pcm(
    data: bytes,
    sample_rate: int,
    *,
    max_bytes: int = 10_000_000,
    max_seconds: float = 120.0,
) -> PcmAudio:
    """Decode a WAV/MP3/OGG/FLAC recording into mono 16-bit PCM at ``sample_rate``."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not data:
        raise AudioError("empty", "0 bytes")
    if len(data) > max_bytes:
        raise AudioError("too_large", f"{len(data)} bytes > {max_bytes}")
    # ffmpeg only ever sees a format we recognised, forced with -f, so it never probes its way
    # into a playlist or concat script that would make it open other files or URLs.
    audio_format = sniff_format(data)
    if audio_format is None:
        raise AudioError("unreadable", "not a WAV, MP3, OGG or FLAC file")

    with tempfile.TemporaryDirectory(prefix="ivr-audio-") as temp_dir:
        # A real file, not a pipe: ffmpeg needs to seek in some containers.
        input_path = Path(temp_dir) / "input"
        input_path.write_bytes(data)
        if audio_format == "wav":
            declared_seconds = read_wav_duration(data)
        else:
            declared_seconds = _probe_duration(input_path, audio_format)
        if declared_seconds is not None and declared_seconds > max_seconds:
            raise AudioError("too_long", f"{declared_seconds:.1f} s > {max_seconds:g} s")
        samples = _decode(input_path, audio_format, sample_rate, max_seconds)

    if not samples:
        raise AudioError("empty", "no audio samples")
    duration_seconds = len(samples) / SAMPLE_WIDTH_BYTES / sample_rate
    # The decoder stops a little past max_seconds, so anything beyond it was too long.
    if duration_seconds > max_seconds:
        raise AudioError("too_long", f"more than {max_seconds:g} s of audio")
    return PcmAudio(samples=samples, sample_rate=sample_rate, duration_seconds=duration_seconds)


def is_silent(audio: PcmAudio, threshold_dbfs: float = -45.0) -> bool:
    """Return True when less than MIN_SOUND_MS of the audio is louder than the threshold."""
    if not audio.samples:
        return True
    segment = AudioSegment(
        data=audio.samples,
        sample_width=SAMPLE_WIDTH_BYTES,
        frame_rate=audio.sample_rate,
        channels=1,
    )
    loud_windows = sum(
        1 for window in make_chunks(segment, SILENCE_WINDOW_MS) if window.dBFS >= threshold_dbfs
    )
    return loud_windows * SILENCE_WINDOW_MS < MIN_SOUND_MS


def read_model_sample_rate(model_dir: str | Path) -> int:
    """Return the sample rate a Vosk model expects, from conf/mfcc.conf (16000 if unset)."""
    model_path = Path(model_dir)
    if not model_path.is_dir():
        raise FileNotFoundError(f"no model directory at {model_path}")
    conf_path = model_path / "conf" / "mfcc.conf"
    if not conf_path.is_file():
        return DEFAULT_MODEL_SAMPLE_RATE
    try:
        text = conf_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{conf_path}: not a text file") from error
    sample_rate = DEFAULT_MODEL_SAMPLE_RATE
    for line in text.splitlines():
        # Kaldi config files: one --option=value per line, '#' starts a comment.
        option = line.split("#", 1)[0].strip()
        name, _, value = option.partition("=")
        if name.strip() == "--sample-frequency":
            # Later lines override earlier ones, as in Kaldi.
            sample_rate = _parse_sample_rate(value.strip(), conf_path)
    return sample_rate


def sniff_format(data: bytes) -> str | None:
    """Return the audio format the leading bytes announce, whatever the file was named."""
    if data[:4] in (b"RIFF", b"RF64", b"BW64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3":
        return "mp3"
    # An MPEG audio frame: 11 sync bits, then a non-zero layer (zero would be AAC's ADTS).
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0 and data[1] & 0x06:
        return "mp3"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    return None


def read_wav_duration(data: bytes) -> float | None:
    """Return the duration a WAV header declares, or None when the header cannot tell."""
    byte_rate = 0
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and chunk_size >= 16 and body + 16 <= len(data):
            (byte_rate,) = struct.unpack_from("<I", data, body + 8)
        elif chunk_id == b"data":
            if byte_rate == 0:
                return None
            available = len(data) - body
            # Streaming writers leave the size as 0 or 0xFFFFFFFF; trust the bytes we have.
            data_size = available if chunk_size == 0 else min(chunk_size, available)
            return data_size / byte_rate
        offset = body + chunk_size + (chunk_size & 1)
    return None


def _parse_sample_rate(value: str, conf_path: Path) -> int:
    """Parse a --sample-frequency value such as 16000 or 8000.0."""
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"{conf_path}: bad --sample-frequency {value!r}") from None
    if not math.isfinite(rate) or rate != int(rate) or not 1000 <= rate <= 192_000:
        raise ValueError(f"{conf_path}: bad --sample-frequency {value!r}")
    return int(rate)


def _find_tool(name: str) -> str:
    """Return the path of ffmpeg or ffprobe, failing loudly when it is not installed."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: install ffmpeg (apt-get install ffmpeg)")
    return path


def _run_tool(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg or ffprobe with a timeout; a hung or failed run is unreadable audio."""
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FFMPEG_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AudioError("unreadable", f"{Path(command[0]).name} timed out") from None


def _probe_duration(path: Path, audio_format: str) -> float | None:
    """Return the duration ffprobe reads from the container, or None when it cannot tell."""
    result = _run_tool(
        [
            _find_tool("ffprobe"),
            "-v",
            "error",
            "-protocol_whitelist",
            "file",
            "-f",
            audio_format,
            "-show_entries",
            "format=duration",
            "-of",
            "json",
            str(path),
        ]
    )
    if result.returncode != 0:
        raise AudioError("unreadable", _last_line(result.stderr, path))
    try:
        return float(json.loads(result.stdout)["format"]["duration"])
    except (ValueError, KeyError, TypeError):
        return None


def _decode(path: Path, audio_format: str, sample_rate: int, max_seconds: float) -> bytes:
    """Decode the first audio stream into mono s16le at ``sample_rate``, capped in length."""
    result = _run_tool(
        [
            _find_tool("ffmpeg"),
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-protocol_whitelist",
            "file,pipe",
            "-f",
            audio_format,
            "-i",
            str(path),
            "-map",
            "0:a:0",
            # Stop shortly after the limit, so an endless stream still ends and is caught.
            "-t",
            f"{max_seconds + 1:.3f}",
            "-ac",
            "1",
            "-ar",
            str(sample_rate),
            "-acodec",
            "pcm_s16le",
            "-f",
            "s16le",
            "pipe:1",
        ]
    )
    if result.returncode != 0:
        raise AudioError("unreadable", _last_line(result.stderr, path))
    return result.stdout


def _last_line(stderr: bytes, path: Path) -> str:
    """Return the last line ffmpeg wrote, which names the error, without the temp path."""
    lines = stderr.decode(errors="replace").replace(str(path), "input").strip().splitlines()
    return lines[-1] if lines else "ffmpeg failed"
