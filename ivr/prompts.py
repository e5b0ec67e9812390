"""Prompt texts from prompts/<lang>.toml, with their fields filled in for speaking."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ivr.hours import in_moscow, parse_instant
from ivr.tickets import group_digits
from ivr.vocabulary import Language, values

LANGUAGES = values(Language)
REQUIRED_SECTIONS = ("voice", "prompts", "status", "units")


@dataclass(frozen=True)
class Voice:
    """The <Say> voice and language for one prompt language."""

    language: str
    voice: str


def spoken_digits(number: str) -> str:
    """Digits spaced so text-to-speech reads them one by one, grouped with commas."""
    return ", ".join(" ".join(group) for group in group_digits(number))


def plural_form(count: int, forms: list[str], language: str) -> str:
    """Pick the noun form for `count` (Russian: one / few / many; English: one / other)."""
    if language == Language.RU:
        if count % 10 == 1 and count % 100 != 11:
            return forms[0]
        if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14:
            return forms[1]
        return forms[2]
    return forms[0] if count == 1 else forms[1]


class Prompts:
    """All prompt texts of one language."""

    def __init__(self, language: str, data: dict[str, Any]):
        missing = [section for section in REQUIRED_SECTIONS if section not in data]
        if missing:
            raise ValueError(f"prompts/{language}.toml lacks sections: {', '.join(missing)}")
        self.language = language
        self.voice = Voice(**data["voice"])
        self.texts: dict[str, str] = data["prompts"]
        self.status_labels: dict[str, str] = data["status"]
        self.units: dict[str, Any] = data["units"]
        # Tells two catalogues apart by content (what rendered TwiML is memoised under).
        self.fingerprint = hashlib.sha256(
            json.dumps([language, data], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()

    def text(self, key: str, params: dict[str, Any] | None = None) -> str:
        """The text of prompt `key` with its fields filled in."""
        template = self.texts[key]
        values = {name: self._format(name, value) for name, value in (params or {}).items()}
        return template.format(**values)

    def _format(self, name: str, value: Any) -> str:
        if name == "digits" or name == "ticket":
            return spoken_digits(str(value))
        if name == "hours":
            return self.duration(int(value))
        if name == "when":
            return self.moment(str(value))
        if name == "date":
            return self.day(str(value))
        if name == "status":
            return self.status_labels.get(str(value), str(value))
        return str(value)

    def duration(self, hours: int) -> str:
        """'24 часа', '3 дня', '5 days'."""
        if hours >= 48 and hours % 24 == 0:
            days = hours // 24
            return f"{days} {plural_form(days, self.units['day'], self.language)}"
        return f"{hours} {plural_form(hours, self.units['hour'], self.language)}"

    def day(self, iso_date: str) -> str:
        """'27 ноября' / 'November 27'."""
        if not iso_date:
            return ""
        when = date.fromisoformat(iso_date[:10])
        month = self.units["months"][when.month - 1]
        return f"{when.day} {month}" if self.language == Language.RU else f"{month} {when.day}"

    def moment(self, iso_instant: str) -> str:
        """A Moscow date and time: '27 ноября в 8:00' / 'November 27 at 8:00'."""
        if not iso_instant:
            return ""
        local = in_moscow(parse_instant(iso_instant))
        day = self.day(local.date().isoformat())
        return f"{day} {self.units['at']} {local.hour}:{local.minute:02d}"


def load_prompts(directory: Path) -> dict[str, Prompts]:
    """Load every language's prompts; the languages must define the same keys."""
    catalogue = {}
    for language in LANGUAGES:
        path = directory / f"{language}.toml"
        with path.open("rb") as handle:
            catalogue[language] = Prompts(language, tomllib.load(handle))
    reference = set(catalogue[Language.RU].texts)
    for language, prompts in catalogue.items():
        if set(prompts.texts) != reference:
            difference = sorted(reference ^ set(prompts.texts))
            raise ValueError(f"prompts/{language}.toml keys differ from ru: {difference}")
    return catalogue
