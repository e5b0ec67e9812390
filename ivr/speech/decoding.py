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
    words = []
    for segment in segments:
        words.extend(words_of(segment))
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


def warm_up(model_dir: str, sample_rate: int) -> None:
    """Decode a moment of silence: the first free-speech decode of a model costs ~1 s extra.

    Paid at start-up instead of by the first caller (measured with the Korean small model).
    """
    recogniser = vosk_module().KaldiRecognizer(load_model(model_dir), sample_rate)
    recogniser.AcceptWaveform(bytes(2 * sample_rate // 2))
    recogniser.FinalResult()


def words_of(result: str | dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """The words of one Vosk JSON result, any unknown-word token spelled "[unk]"."""
    data = json.loads(result) if isinstance(result, str) else result
    words = []
    for item in data.get("result", []) or []:
        word = "[unk]" if item["word"] in UNKNOWN_WORD_TOKENS else item["word"]
        words.append((word, float(item.get("conf", 1.0)), float(item["start"]), float(item["end"])))
    return words


class StreamDecoder:
    """One utterance decoded as its audio arrives (in a worker; one recogniser per stream).

    A grammar with nothing of it in the model's vocabulary falls back to free speech, as the
    batch service does after "grammar_out_of_vocabulary": the caller is not made to repeat.
    """

    def __init__(self, model_dir: str, sample_rate: int, grammar: Sequence[str] | None) -> None:
        vosk = vosk_module()
        model = load_model(model_dir)
        self.mode = "free"
        self.dropped: list[str] = []
        self.grammar_error: str | None = None
        recogniser = None
        if grammar is not None and supports_runtime_grammar(model_dir):
            try:
                phrases, self.dropped = build_grammar(model, grammar)
            except GrammarError as error:
                self.grammar_error = str(error)
                self.dropped = list(grammar)
            else:
                recogniser = vosk.KaldiRecognizer(
                    model, sample_rate, json.dumps(phrases, ensure_ascii=False)
                )
                self.mode = "grammar"
        self.recogniser = recogniser or vosk.KaldiRecognizer(model, sample_rate)
        self.recogniser.SetWords(True)
        self.words: list[tuple[str, float, float, float]] = []
        self.partial = ""
        self.processing_seconds = 0.0

    def opened(self) -> dict[str, Any]:
        """What the parent learns when the stream opens."""
        return {
            "kind": "opened",
            "mode": self.mode,
            "dropped": self.dropped,
            "grammar_error": self.grammar_error,
        }

    def accept(self, pcm: bytes) -> dict[str, Any]:
        """Feed audio; report an endpoint with words, a changed partial, or just progress."""
        started = time.perf_counter()
        try:
            if self.recogniser.AcceptWaveform(pcm):
                segment = words_of(self.recogniser.Result())
                self.words.extend(segment)
                self.partial = ""
                return {"kind": "endpoint", "words": segment} if segment else {"kind": "ack"}
            partial = json.loads(self.recogniser.PartialResult()).get("partial", "")
        finally:
            self.processing_seconds += time.perf_counter() - started
        if partial != self.partial:
            self.partial = partial
            return {"kind": "partial", "text": partial}
        return {"kind": "ack"}

    def finish(self) -> dict[str, Any]:
        """The utterance is over: every word heard, and what decoding cost."""
        started = time.perf_counter()
        self.words.extend(words_of(self.recogniser.FinalResult()))
        self.processing_seconds += time.perf_counter() - started
        return {
            "kind": "final",
            "words": self.words,
            "mode": self.mode,
            "dropped": self.dropped,
            "processing_seconds": self.processing_seconds,
        }
