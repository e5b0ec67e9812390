"""What a recognition is, and the facts about a Vosk model folder read without loading it.

Nothing here imports vosk: the web process, the batch engine and the streaming recognisers
all use these types and checks, and only worker processes load Kaldi (ivr.speech.decoding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_SAMPLE_RATE = 16000
# Unknown-word tokens, best first: most Vosk models call it "[unk]", the Korean small
# model (and other Kaldi recipes) "<UNK>".
UNKNOWN_WORD_TOKENS = ("[unk]", "<UNK>", "<unk>")


class GrammarError(ValueError):
    """A grammar the decoder cannot use (empty, or nothing of it in the vocabulary)."""


class Word(NamedTuple):
    """One recognised word: the word, its confidence 0..1, start and end in seconds."""

    word: str
    conf: float
    start: float
    end: float


@dataclass(frozen=True)
class Recognition:
    """The outcome of decoding one utterance."""

    text: str
    words: tuple[Word, ...]
    confidence: float
    mode: str
    model_name: str
    processing_seconds: float
    audio_seconds: float
    ok: bool
    reason: str | None = None
    language: str = ""
    dropped_words: tuple[str, ...] = field(default=())

    @property
    def real_time_factor(self) -> float:
        """Processing time per second of audio (0 when there was no audio)."""
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @classmethod
    def failure(
        cls,
        reason: str,
        *,
        language: str = "",
        mode: str = "free",
        model_name: str = "",
        audio_seconds: float = 0.0,
        processing_seconds: float = 0.0,
        dropped_words: Sequence[str] = (),
    ) -> Recognition:
        """Build a result that recognised nothing, for the given reason."""
        return cls(
            text="",
            words=(),
            confidence=0.0,
            mode=mode,
            model_name=model_name,
            processing_seconds=processing_seconds,
            audio_seconds=audio_seconds,
            ok=False,
            reason=reason,
            language=language,
            dropped_words=tuple(dropped_words),
        )

    @classmethod
    def from_words(
        cls,
        words: Sequence[Sequence[Any]],
        *,
        language: str,
        mode: str,
        model_name: str,
        processing_seconds: float,
        audio_seconds: float,
        dropped_words: Sequence[str] = (),
    ) -> Recognition:
        """Build the result of a decode from its words ("[unk]" alone means no match)."""
        heard_words = tuple(Word(*item) for item in words)
        heard = [w for w in heard_words if w.word != "[unk]"]
        reason = None if heard else ("no_match" if heard_words else "no_speech")
        return cls(
            text=" ".join(w.word for w in heard_words),
            words=heard_words,
            confidence=(
                sum(w.conf for w in heard_words) / len(heard_words) if heard_words else 0.0
            ),
            mode=mode,
            model_name=model_name,
            processing_seconds=processing_seconds,
            audio_seconds=audio_seconds,
            ok=reason is None,
            reason=reason,
            language=language,
            dropped_words=tuple(dropped_words),
        )


# --- facts read from a model folder, without loading it -------------------------------


def model_sample_rate(model_dir: str | os.PathLike[str]) -> int:
    """Read the sample rate from ``<model>/conf/mfcc.conf`` (Kaldi's default: 16000)."""
    conf = Path(model_dir) / "conf" / "mfcc.conf"
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        return DEFAULT_SAMPLE_RATE
    for line in lines:
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if name == "--sample-frequency" and value.strip():
            return int(float(value))
    return DEFAULT_SAMPLE_RATE


def model_graph(model_dir: str | os.PathLike[str]) -> str | None:
    """Name the decoding graph: "HCLG" (static), "HCLr+Gr" (runtime grammars) or None."""
    graph = Path(model_dir) / "graph"
    # Vosk loads HCLG.fst when it exists, whatever else is there (model.cc).
    if (graph / "HCLG.fst").is_file() or (Path(model_dir) / "HCLG.fst").is_file():
        return "HCLG"
    if (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file():
        return "HCLr+Gr"
    return None


def supports_runtime_grammar(model_dir: str | os.PathLike[str]) -> bool:
    """Tell whether Vosk can restrict this model to a grammar at run time."""
    return model_graph(model_dir) == "HCLr+Gr"


def model_name_of(model_dir: str | os.PathLike[str]) -> str:
    """A readable model name: the folder name, or the package's for a folder called "model"."""
    path = Path(model_dir).resolve()
    return path.parent.name if path.name == "model" else path.name


def model_problem(model_dir: str | os.PathLike[str]) -> str | None:
    """Say what makes a folder unusable as a Vosk model, or None when it looks fine."""
    path = Path(model_dir)
    if not path.is_dir():
        return f"model folder {path} does not exist"
    for required in ("am/final.mdl", "conf/model.conf"):
        if not (path / required).is_file():
            return f"model folder {path} has no {required}"
    if model_graph(path) is None:
        return f"model folder {path} has no graph (HCLG.fst or HCLr.fst + Gr.fst)"
    return None


def normalise_grammar(grammar: Sequence[str]) -> list[str]:
    """Tidy grammar phrases (trim, one space, no repeats) and refuse an empty grammar."""
    if isinstance(grammar, str):
        raise GrammarError("grammar must be a list of phrases, not one string")
    phrases: list[str] = []
    for phrase in grammar:
        if not isinstance(phrase, str):
            raise GrammarError(f"grammar phrases must be strings, got {phrase!r}")
        tidy = " ".join(phrase.split())
        if tidy and tidy not in UNKNOWN_WORD_TOKENS and tidy not in phrases:
            phrases.append(tidy)
    if not phrases:
        # An empty JSON list crashes vosk 0.3.45 (segfault), so it never reaches Kaldi.
        raise GrammarError("grammar must list at least one phrase")
    return phrases


@dataclass(frozen=True)
class ModelFacts:
    """What the parent knows about one configured model without loading it."""

    language: str
    model_dir: str
    name: str
    sample_rate: int
    graph: str | None
    problem: str | None

    @property
    def runtime_grammar(self) -> bool:
        """Whether grammars can be set at run time."""
        return self.graph == "HCLr+Gr"


def model_facts(language: str, model_dir: str | os.PathLike[str]) -> ModelFacts:
    """Collect the facts about one model folder."""
    path = str(Path(model_dir).resolve())
    return ModelFacts(
        language=language,
        model_dir=path,
        name=model_name_of(path),
        sample_rate=model_sample_rate(path),
        graph=model_graph(path),
        problem=model_problem(path),
    )


class ModelsInWorkers:
    """What an engine whose workers load the models says about them (batch or streaming).

    Expects `_lock`, `_model_dirs` (language -> folder), `_facts` (language -> ModelFacts)
    and `_worker_models` (language -> the workers' load report).
    """

    _lock: Any
    _model_dirs: dict[str, str]
    _facts: dict[str, ModelFacts]
    _worker_models: dict[str, dict[str, Any]]

    def available_languages(self) -> list[str]:
        """Languages with a usable model (a failed load in the workers counts as unusable)."""
        with self._lock:
            loaded = dict(self._worker_models)
        return sorted(
            lang for lang in self._model_dirs if lang not in loaded or loaded[lang].get("ok", False)
        )

    def sample_rate(self, language: str) -> int:
        """The model's rate: PCM for this language must have it (streams resample to it)."""
        return self._facts[language].sample_rate

    def supports_grammar(self, language: str) -> bool:
        """Whether this language's model can be restricted to a grammar."""
        return self._facts[language].runtime_grammar
