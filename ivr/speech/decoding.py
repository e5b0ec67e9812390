"""Decoding with Vosk inside a worker process (the only module that imports vosk).

Everything here runs in a worker (ivr.speech.workers) or in the local vosk-server: a model
is loaded once per process, and each utterance gets its own ``KaldiRecognizer`` (they are
not thread-safe). Answers go back to the parent as plain data.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ivr.speech.recognition import (
    UNKNOWN_WORD_TOKENS,
    GrammarError,
    normalise_grammar,
    supports_runtime_grammar,
)

logger = logging.getLogger("ivr.speech")

# How much audio is fed to the decoder at a time.
CHUNK_SECONDS = 0.25

_MODEL_CACHE: dict[str, Any] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def vosk_module() -> Any:
    """Import vosk on first use, so the web process never loads Kaldi."""
    import vosk

    return vosk


def load_model(model_dir: str | os.PathLike[str]) -> Any:
    """Load a Vosk model once per process and keep it (workers call this, not requests)."""
    key = str(Path(model_dir).resolve())
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = vosk_module().Model(key)
            _MODEL_CACHE[key] = model
        return model


def check_vocabulary(model: Any, words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split words (or phrases, every word of which must be known) into present and missing."""
    present: list[str] = []
    missing: list[str] = []
    for phrase in words:
        tokens = phrase.split()
        known = bool(tokens) and all(model.vosk_model_find_word(t) >= 0 for t in tokens)
        (present if known else missing).append(phrase)
    return present, missing


def unknown_word_token(model: Any) -> str | None:
    """Return the model's own unknown-word token ("[unk]", "<UNK>", ...), if it has one."""
    for token in UNKNOWN_WORD_TOKENS:
        if model.vosk_model_find_word(token) >= 0:
            return token
    return None


def build_grammar(model: Any, grammar: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return (phrases for Vosk, dropped phrases): known phrases plus the unknown-word token."""
    phrases = normalise_grammar(grammar)
    present, missing = check_vocabulary(model, phrases)
    if missing:
        logger.warning(
            "grammar phrases missing from the model's vocabulary were dropped: %s",
            ", ".join(missing),
        )
    if not present:
        raise GrammarError(
            "none of the grammar phrases is in the model's vocabulary "
            f"(wrong language model?): {', '.join(missing)}"
        )
    token = unknown_word_token(model)
    # Without an unknown-word path every sound is forced onto a grammar word.
    return present + ([token] if token else []), missing


def decode_utterance(
    model_dir: str, sample_rate: int, pcm: bytes, grammar: Sequence[str] | None
) -> dict[str, Any]:
    """Decode one utterance with a fresh recogniser; return plain data for the parent."""
    vosk = vosk_module()
    started = time.perf_counter()
    model = load_model(model_dir)
    dropped: list[str] = []
    mode = "free"
    if grammar is not None and supports_runtime_grammar(model_dir):
        try:
            phrases, dropped = build_grammar(model, grammar)
        except GrammarError as error:
            return {
                "reason": "grammar_out_of_vocabulary",
                "error": str(error),
                "mode": "grammar",
                "dropped": list(grammar),
            }
        recogniser = vosk.KaldiRecognizer(
            model, sample_rate, json.dumps(phrases, ensure_ascii=False)
        )
        mode = "grammar"
    else:
        recogniser = vosk.KaldiRecognizer(model, sample_rate)
    recogniser.SetWords(True)
    segments: list[str] = []
    chunk = max(2, int(sample_rate * CHUNK_SECONDS) * 2)
    for offset in range(0, len(pcm), chunk):
        if recogniser.AcceptWaveform(pcm[offset : offset + chunk]):
            # An endpoint closed a segment; its result is lost unless taken now.
            segments.append(recogniser.Result())
    segments.append(recogniser.FinalResult())
    token = unknown_word_token(model)
    words = []
    for segment in segments:
        for item in json.loads(segment).get("result", []):
            word = "[unk]" if item["word"] == token else item["word"]
            words.append(
                (word, float(item.get("conf", 1.0)), float(item["start"]), float(item["end"]))
            )
    return {
        "words": words,
        "mode": mode,
        "dropped": dropped,
        "processing_seconds": time.perf_counter() - started,
        "reason": None,
    }


def describe_vocabulary(model_dir: str, words: Sequence[str]) -> dict[str, Any]:
    """Check words against a loaded model's vocabulary (for the start-up check)."""
    model = load_model(model_dir)
    present, missing = check_vocabulary(model, [w for w in words if w.strip()])
    return {"present": present, "missing": missing, "unknown_word_token": unknown_word_token(model)}
