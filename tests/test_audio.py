"""Tests for ivr.speech.audio against the real fixtures and the real ffmpeg (no mocks)."""

import functools
import pickle
import shutil
import struct
import subprocess
import tempfile
import tomllib
import wave
from pathlib import Path

import pytest

from ivr.speech.audio import (
    AudioError,
    PcmAudio,
    is_silent,
    read_model_sample_rate,
    read_wav_duration,
    sniff_format,
    to_model_pcm,
)

AUDIO_DIR = Path(__file__).parent / "fixtures" / "audio"
MANIFEST = tomllib.loads((AUDIO_DIR / "manifest.toml").read_text(encoding="utf-8"))
DECODABLE = sorted(name for name, entry in MANIFEST.items() if entry["kind"] != "bad")
BAD = sorted(name for name, entry in MANIFEST.items() if entry["kind"] == "bad")
SPEECH = sorted(
    name
    for name, entry in MANIFEST.items()
    if entry["kind"] in ("order_number", "yes_no", "description", "format_variant")
)
MODEL_RATE = 16000


def fixture_bytes(name: str) -> bytes:
    """Return the bytes of the fixture with this manifest name."""
    return (AUDIO_DIR / MANIFEST[name]["file"]).read_bytes()


@functools.cache
def decoded(name: str) -> PcmAudio:
    """Return the fixture decoded at the model rate, once per test session."""
    return to_model_pcm(fixture_bytes(name), MODEL_RATE)


def make_silence(path: Path, seconds: float, rate: int = 8000) -> Path:
    """Write silence of the given length with sox (or ffmpeg for MP3) and return the path."""
    if path.suffix == ".mp3":
        source = make_silence(path.with_suffix(".wav"), seconds, rate)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-b:a", "32k", path],
            check=True,
            timeout=60,
        )
        return path
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)],
        check=True,
        timeout=60,
    )
    return path


def test_ffmpeg_is_installed() -> None:
    """CI installs ffmpeg; without it every decoding test must fail, not skip."""
    assert shutil.which("ffmpeg"), "ffmpeg is required: apt-get install ffmpeg"
    assert shutil.which("ffprobe"), "ffprobe is required: apt-get install ffmpeg"


def test_manifest_lists_every_fixture() -> None:
    """Each file in the audio directory has exactly one manifest table."""
    listed = sorted(entry["file"] for entry in MANIFEST.values())
    on_disk = sorted(path.name for path in AUDIO_DIR.iterdir() if path.name != "manifest.toml")
    assert listed == on_disk


@pytest.mark.parametrize("name", DECODABLE)
def test_every_format_becomes_mono_16_bit_at_model_rate(name: str) -> None:
    """WAV (PCM, μ-law, 8/16/44.1 kHz, stereo) and MP3 all decode to mono s16le at 16 kHz."""
    audio = decoded(name)
    assert audio.sample_rate == MODEL_RATE
    assert len(audio.samples) % 2 == 0
    assert audio.duration_seconds == len(audio.samples) / 2 / MODEL_RATE
    # MP3's container duration includes encoder padding that the decoder trims.
    assert audio.duration_seconds == pytest.approx(MANIFEST[name]["duration_seconds"], abs=0.25)


def test_8_khz_to_16_khz_doubles_the_sample_count() -> None:
    """Resampling Twilio's 8 kHz WAV to 16 kHz gives exactly twice the samples."""
    with wave.open(str(AUDIO_DIR / "ru_order_digits_1.wav")) as recording:
        assert (recording.getframerate(), recording.getnchannels()) == (8000, 1)
        frames = recording.getnframes()
    audio = to_model_pcm(fixture_bytes("ru_order_digits_1"), MODEL_RATE)
    assert len(audio.samples) // 2 == 2 * frames


def test_same_rate_pcm_passes_through_unchanged() -> None:
    """Asking for the file's own rate returns its samples bit for bit."""
    with wave.open(str(AUDIO_DIR / "ru_order_digits_1.wav")) as recording:
        original = recording.readframes(recording.getnframes())
    assert to_model_pcm(fixture_bytes("ru_order_digits_1"), 8000).samples == original


def test_stereo_44_khz_becomes_mono_of_the_same_length() -> None:
    """The 44.1 kHz stereo copy lasts as long as the mono original once mixed down."""
    stereo = to_model_pcm(fixture_bytes("ru_order_digits_1_44k_stereo"), MODEL_RATE)
    mono = to_model_pcm(fixture_bytes("ru_order_digits_1"), MODEL_RATE)
    assert stereo.duration_seconds == pytest.approx(mono.duration_seconds, abs=0.01)
    assert not is_silent(stereo)


def test_mp3_named_wav_is_decoded_by_its_bytes() -> None:
    """An MP3 saved as .wav decodes exactly like the same MP3 under its own name."""
    mislabelled = fixture_bytes("ru_order_digits_1_mp3_named_wav")
    assert sniff_format(mislabelled) == "mp3"
    assert to_model_pcm(mislabelled, MODEL_RATE) == to_model_pcm(
        fixture_bytes("ru_order_digits_1_mp3"), MODEL_RATE
    )


@pytest.mark.parametrize("name", BAD)
def test_bad_files_raise_the_manifest_reason(name: str) -> None:
    """Empty, truncated and non-audio files raise AudioError with the expected reason."""
    with pytest.raises(AudioError) as caught:
        to_model_pcm(fixture_bytes(name), MODEL_RATE)
    assert caught.value.reason == MANIFEST[name]["expected_error"]


@pytest.mark.parametrize(
    "data",
    [
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://169.254.169.254/latest\n",
        b"ffconcat version 1.0\nfile /etc/passwd\n",
        b"\x00" * 64,
    ],
    ids=["hls_playlist", "concat_script", "zeros"],
)
def test_non_audio_is_unreadable_without_ffmpeg_probing_it(data: bytes) -> None:
    """Playlists and scripts are refused by their magic before ffmpeg could follow them."""
    assert sniff_format(data) is None
    with pytest.raises(AudioError) as caught:
        to_model_pcm(data, MODEL_RATE)
    assert caught.value.reason == "unreadable"


def test_header_only_wav_is_empty() -> None:
    """A WAV header with no sample data has nothing to recognise."""
    with pytest.raises(AudioError) as caught:
        to_model_pcm(fixture_bytes("ru_yes")[:44], MODEL_RATE)
    assert caught.value.reason == "empty"


def test_too_large_is_refused_before_decoding() -> None:
    """Size is checked first: undecodable bytes over the limit say too_large, not unreadable."""
    with pytest.raises(AudioError) as caught:
        to_model_pcm(b"\x00" * 10_000_001, MODEL_RATE)
    assert caught.value.reason == "too_large"
    data = fixture_bytes("ru_yes")
    with pytest.raises(AudioError) as caught:
        to_model_pcm(data, MODEL_RATE, max_bytes=len(data) - 1)
    assert caught.value.reason == "too_large"
    assert to_model_pcm(data, MODEL_RATE, max_bytes=len(data)).duration_seconds > 0


@pytest.mark.parametrize("suffix", [".wav", ".mp3"])
def test_too_long_is_refused_from_the_header(tmp_path: Path, suffix: str) -> None:
    """130 s of 8 kHz silence is over the 120 s default (WAV header or ffprobe)."""
    data = make_silence(tmp_path / f"long{suffix}", 130).read_bytes()
    with pytest.raises(AudioError) as caught:
        to_model_pcm(data, MODEL_RATE)
    assert caught.value.reason == "too_long"
    assert to_model_pcm(data, MODEL_RATE, max_seconds=140).duration_seconds == pytest.approx(
        130, abs=0.1
    )


def test_too_long_is_caught_after_decoding_when_the_header_lies(tmp_path: Path) -> None:
    """A header claiming 13 s over 130 s of samples is still refused by the decoded length."""
    data = bytearray(make_silence(tmp_path / "lying.wav", 130).read_bytes())
    struct.pack_into("<I", data, 28, 160_000)  # byte rate ten times the real one
    assert read_wav_duration(bytes(data)) == pytest.approx(13.0)
    with pytest.raises(AudioError) as caught:
        to_model_pcm(bytes(data), MODEL_RATE)
    assert caught.value.reason == "too_long"


@pytest.mark.parametrize("size_field", [0, 0xFFFFFFFF])
def test_streaming_wav_size_fields_use_the_bytes_present(size_field: int) -> None:
    """A data chunk size of 0 or 0xFFFFFFFF (unfinished stream) still decodes fully."""
    data = bytearray(fixture_bytes("ru_yes"))
    struct.pack_into("<I", data, 40, size_field)
    expected = to_model_pcm(fixture_bytes("ru_yes"), MODEL_RATE)
    assert read_wav_duration(bytes(data)) == pytest.approx(
        MANIFEST["ru_yes"]["duration_seconds"], abs=0.001
    )
    assert to_model_pcm(bytes(data), MODEL_RATE) == expected


def test_no_temp_files_are_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temp files live in a temp dir that is removed after success and after failure."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    to_model_pcm(fixture_bytes("ru_order_digits_1_mp3"), MODEL_RATE)
    with pytest.raises(AudioError):
        to_model_pcm(fixture_bytes("bad_truncated_header"), MODEL_RATE)
    assert list(tmp_path.iterdir()) == []


def test_invalid_sample_rate_is_a_programming_error() -> None:
    """A non-positive target rate is a ValueError, not an AudioError."""
    with pytest.raises(ValueError):
        to_model_pcm(fixture_bytes("ru_yes"), 0)


def test_audio_error_carries_reason_and_survives_pickling() -> None:
    """AudioError exposes a machine-readable reason and a readable message."""
    error = AudioError("too_long", "130.0 s > 120 s")
    assert (error.reason, str(error)) == ("too_long", "too_long: 130.0 s > 120 s")
    assert str(AudioError("silence")) == "silence"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, round trip
    assert (copy.reason, copy.detail) == ("too_long", "130.0 s > 120 s")


def test_silence_fixture_is_silent() -> None:
    """Three seconds of digital silence is silent."""
    assert is_silent(decoded("silence_3s"))


@pytest.mark.parametrize("name", ["noise_3s", *SPEECH])
def test_noise_and_speech_are_not_silent(name: str) -> None:
    """Low white noise and every spoken fixture are louder than the threshold."""
    assert not is_silent(decoded(name))


def test_silence_threshold_is_adjustable_and_clicks_do_not_count() -> None:
    """Noise at about -33 dBFS is silent under a -20 dBFS threshold; a 10 ms click is too."""
    noise = decoded("noise_3s")
    assert is_silent(noise, threshold_dbfs=-20.0)
    click = b"\x00\x00" * 8000 + struct.pack("<h", 20000) * 160 + b"\x00\x00" * 8000
    assert is_silent(PcmAudio(samples=click, sample_rate=16000, duration_seconds=1.01))
    assert is_silent(PcmAudio(samples=b"", sample_rate=16000, duration_seconds=0.0))


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        (None, 16000),
        ("--use-energy=false\n", 16000),
        ("--use-energy=false\n--sample-frequency=8000\n", 8000),
        ("# telephone model\n--sample-frequency=8000  # narrowband\n", 8000),
        ("--sample-frequency=8000\n--sample-frequency=16000.0\n", 16000),
        ("--sample-frequency = 22050\n", 22050),
    ],
)
def test_read_model_sample_rate(tmp_path: Path, conf: str | None, expected: int) -> None:
    """The rate comes from conf/mfcc.conf, defaulting to 16000 when unset."""
    if conf is not None:
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "mfcc.conf").write_text(conf, encoding="utf-8")
    assert read_model_sample_rate(str(tmp_path)) == expected
    assert read_model_sample_rate(tmp_path) == expected


@pytest.mark.parametrize(
    "conf",
    [
        b"--sample-frequency=abc\n",
        b"--sample-frequency=\n",
        b"--sample-frequency=0\n",
        b"--sample-frequency=-16000\n",
        b"--sample-frequency=16000.5\n",
        b"--sample-frequency=nan\n",
        b"\xff\xfe\x00garbage",
    ],
)
def test_read_model_sample_rate_rejects_garbage(tmp_path: Path, conf: bytes) -> None:
    """A malformed --sample-frequency or a binary mfcc.conf is a ValueError."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mfcc.conf").write_bytes(conf)
    with pytest.raises(ValueError):
        read_model_sample_rate(tmp_path)


def test_read_model_sample_rate_needs_the_model_directory(tmp_path: Path) -> None:
    """A missing model directory is a configuration error, not a default."""
    with pytest.raises(FileNotFoundError):
        read_model_sample_rate(tmp_path / "no-such-model")
