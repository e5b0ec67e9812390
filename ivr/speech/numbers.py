"""Turn recognised number words into digits (order numbers, yes/no answers); pure, no IO.

Callers read a 10-digit order number either digit by digit ("один два три") or in groups
("сорок два ноль семь", "one hundred twenty three"). Vosk gives us the words; this module
decides which digits they mean, and says so when it cannot be sure.

Words
  Each recognised word is one of: a *unit* (0-9, incl. "нуль", "одна/одно", "две", "oh",
  "o", "nought"), a *teen* (10-19), a *tens* word (20-90), a Russian *hundreds* word
  (сто ... девятьсот), English "hundred", English "double"/"triple", or a literal run of
  ASCII digits ("42", as free-mode recognisers sometimes write). "[unk]" and hesitation
  fillers ("э", "ну", "um", "uh", ...) are dropped (so "сорок [unk] два" = "42") and listed
  in ``DigitParse.skipped``.
  English "and" and "a" are connectors: dropped, not reported ("a hundred and five" = 105).
  Any other word makes the parse fail with ``reason="unknown word: X"`` ("тысяча" too:
  order numbers are read in small groups, never with thousands).

Grouped readings (each group is written out in full, groups are concatenated)
  1. A unit or teen stands alone: "один два" = "12", "двенадцать ноль" = "120".
  2. A tens word takes one following unit 1-9: "двадцать три" = "23"; otherwise it stands
     alone: "двадцать ноль пять" = "2005", "twenty twenty" = "2020".
  3. A hundreds word ("сто", "двести", or English "hundred" with no number before it, as in
     "a hundred") takes one following tens word (+ unit 1-9), teen or unit 1-9:
     "сто двадцать три" = "123", "сто три" = "103", "hundred twelve" = "112", "сто" = "100".
  4. English "hundred" multiplies the number just before it (a unit 1-9, teen, tens word or
     tens + unit) and then continues as rule 3: "one hundred twenty three" = "123",
     "nineteen hundred" = "1900", "twelve hundred and five" = "1205". "a" before "hundred"
     blocks the multiplication: "twenty a hundred" = "20" + "100".
  5. "double X" / "triple X" repeat the unit X: "double seven" = "77", "triple oh" = "000".
  6. Zero never merges into a group, so "сто двадцать ноль" = "1200".

Ambiguity (reported, never guessed silently)
  Where a reading really can mean two things, ``ambiguous=True``; ``digits`` holds the reading
  the rules above give and ``alternatives`` the others (at most ``MAX_READINGS`` in all):
  - A leading English "oh"/"o" followed by more numbers may be an interjection:
    "oh four two" = "042" or "42".
  - English tens + unit + "hundred": "forty two hundred" = "4200" or "40200" ("forty",
    "two hundred").
  - A hundreds group followed by zero and a unit 1-9: "сто ноль пять" = "10005" (rule 6) or
    "105" (the zero spoken for the empty tens place); also English "one hundred oh five".
  Everything else is unambiguous: "двадцать три" is 23, never "203".

Order numbers
  ``parse_order_number`` accepts a parse only when exactly ``length`` digits result. When the
  readings of an ambiguous parse differ in length and exactly one has the right length, that
  one is chosen (resolution by length, not a guess) and the result is ok.

Yes/no
  ``parse_yes_no`` looks for yes-words and no-words anywhere in the phrase; a negation makes
  the next yes-word a no ("не верно", "not right"). Both kinds, or neither, give None.
"""

import itertools
import re
from dataclasses import dataclass

from ivr.vocabulary import Language, values

LANGUAGES = values(Language)
UNKNOWN_WORD = "[unk]"
MAX_READINGS = 8

_UNIT = "unit"
_TEEN = "teen"
_TENS = "tens"
_HUNDREDS = "hundreds"
_HUNDRED = "hundred"
_REPEAT = "repeat"
_ARTICLE = "article"
_LITERAL = "literal"

_RU_WORDS: dict[str, tuple[str, int]] = {
    "ноль": (_UNIT, 0),
    "нуль": (_UNIT, 0),
    "один": (_UNIT, 1),
    "одна": (_UNIT, 1),
    "одно": (_UNIT, 1),
    "два": (_UNIT, 2),
    "две": (_UNIT, 2),
    "три": (_UNIT, 3),
    "четыре": (_UNIT, 4),
    "пять": (_UNIT, 5),
    "шесть": (_UNIT, 6),
    "семь": (_UNIT, 7),
    "восемь": (_UNIT, 8),
    "девять": (_UNIT, 9),
    "десять": (_TEEN, 10),
    "одиннадцать": (_TEEN, 11),
    "двенадцать": (_TEEN, 12),
    "тринадцать": (_TEEN, 13),
    "четырнадцать": (_TEEN, 14),
    "пятнадцать": (_TEEN, 15),
    "шестнадцать": (_TEEN, 16),
    "семнадцать": (_TEEN, 17),
    "восемнадцать": (_TEEN, 18),
    "девятнадцать": (_TEEN, 19),
    "двадцать": (_TENS, 20),
    "тридцать": (_TENS, 30),
    "сорок": (_TENS, 40),
    "пятьдесят": (_TENS, 50),
    "шестьдесят": (_TENS, 60),
    "семьдесят": (_TENS, 70),
    "восемьдесят": (_TENS, 80),
    "девяносто": (_TENS, 90),
    "сто": (_HUNDREDS, 100),
    "двести": (_HUNDREDS, 200),
    "триста": (_HUNDREDS, 300),
    "четыреста": (_HUNDREDS, 400),
    "пятьсот": (_HUNDREDS, 500),
    "шестьсот": (_HUNDREDS, 600),
    "семьсот": (_HUNDREDS, 700),
    "восемьсот": (_HUNDREDS, 800),
    "девятьсот": (_HUNDREDS, 900),
}

_EN_WORDS: dict[str, tuple[str, int]] = {
    "zero": (_UNIT, 0),
    "oh": (_UNIT, 0),
    "o": (_UNIT, 0),
    "nought": (_UNIT, 0),
    "one": (_UNIT, 1),
    "two": (_UNIT, 2),
    "three": (_UNIT, 3),
    "four": (_UNIT, 4),
    "five": (_UNIT, 5),
    "six": (_UNIT, 6),
    "seven": (_UNIT, 7),
    "eight": (_UNIT, 8),
    "nine": (_UNIT, 9),
    "ten": (_TEEN, 10),
    "eleven": (_TEEN, 11),
    "twelve": (_TEEN, 12),
    "thirteen": (_TEEN, 13),
    "fourteen": (_TEEN, 14),
    "fifteen": (_TEEN, 15),
    "sixteen": (_TEEN, 16),
    "seventeen": (_TEEN, 17),
    "eighteen": (_TEEN, 18),
    "nineteen": (_TEEN, 19),
    "twenty": (_TENS, 20),
    "thirty": (_TENS, 30),
    "forty": (_TENS, 40),
    "fifty": (_TENS, 50),
    "sixty": (_TENS, 60),
    "seventy": (_TENS, 70),
    "eighty": (_TENS, 80),
    "ninety": (_TENS, 90),
    "hundred": (_HUNDRED, 100),
    "double": (_REPEAT, 2),
    "triple": (_REPEAT, 3),
    "a": (_ARTICLE, 0),
}

_NUMBER_WORDS = {"ru": _RU_WORDS, "en": _EN_WORDS}

# Connectors are part of a spoken number, so they are dropped without being reported.
_CONNECTORS = {"ru": frozenset(), "en": frozenset({"and"})}

# Interjection spellings of "oh": a leading one may not be a zero at all.
_INTERJECTION_ZEROS = frozenset({"oh", "o"})

_FILLERS = {
    "ru": frozenset({"э", "ээ", "эээ", "эм", "ээм", "мм", "ммм", "хм", "ну", "вот", "а", "так"}),
    "en": frozenset({"um", "umm", "uh", "uhm", "er", "erm", "hmm", "mm", "ah", "well", "so"}),
}

_YES_WORDS = {
    "ru": frozenset(
        {"да", "ага", "угу", "верно", "правильно", "конечно", "точно", "подтверждаю", "именно"}
    ),
    "en": frozenset(
        {"yes", "yeah", "yep", "yup", "yea", "correct", "right", "sure", "ok", "okay", "exactly"}
        | {"affirmative", "absolutely", "true"}
    ),
}
_NO_WORDS = {
    "ru": frozenset({"нет", "неа", "неверно", "неправильно", "ошибка", "нету"}),
    "en": frozenset({"no", "nope", "nah", "wrong", "incorrect", "negative", "false"}),
}
# "не верно", "not right": a negation turns the following yes-word (or "так") into a no.
_NEGATIONS = {"ru": frozenset({"не"}), "en": frozenset({"not"})}
_NEGATABLE = {"ru": frozenset({"так"}), "en": frozenset()}

_TOKEN_PATTERN = re.compile(r"\[unk\]|[^\W_]+(?:'[^\W_]+)*")


@dataclass(frozen=True)
class DigitParse:
    """What a recognised phrase says as digits, and whether it can be used as is."""

    digits: str
    ok: bool
    ambiguous: bool = False
    reason: str | None = None
    alternatives: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Word:
    """One number word as spoken, with its kind and value."""

    text: str
    kind: str
    value: int


@dataclass(frozen=True)
class _Segment:
    """One group of digits; more than one reading when the words are ambiguous."""

    readings: tuple[str, ...]
    phrase: str


@dataclass(frozen=True)
class _Reading:
    """Every reading of a phrase (the rules' reading first), plus what went wrong."""

    readings: tuple[str, ...]
    notes: tuple[str, ...]
    skipped: tuple[str, ...]
    error: str | None


def _check_language(language: str) -> None:
    """Raise ValueError for a language this module has no words for."""
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language: {language!r} (expected one of {LANGUAGES})")


def _tokenize(text: str) -> list[str]:
    """Split recognised text into lower-case words ("ё" read as "е", hyphens split)."""
    return _TOKEN_PATTERN.findall(text.lower().replace("ё", "е"))


def number_words(language: str) -> list[str]:
    """Return the words a Vosk grammar needs for spoken numbers (add UNKNOWN_WORD yourself)."""
    _check_language(language)
    return list(dict.fromkeys([*_NUMBER_WORDS[language], *_CONNECTORS[language]]))


def yes_no_words(language: str) -> list[str]:
    """Return the words a Vosk grammar needs for yes/no answers."""
    _check_language(language)
    words = [
        *sorted(_YES_WORDS[language]),
        *sorted(_NO_WORDS[language]),
        *sorted(_NEGATIONS[language]),
        *sorted(_NEGATABLE[language]),
    ]
    return list(dict.fromkeys(words))


def _tail(words: list[_Word], start: int) -> tuple[tuple[int, ...], int]:
    """Read what may follow a hundreds value: (addends, or (0, unit) for zero+unit; used)."""
    first = words[start] if start < len(words) else None
    second = words[start + 1] if start + 1 < len(words) else None
    if first is None:
        return (), 0
    if first.kind == _TENS:
        if second is not None and second.kind == _UNIT and second.value > 0:
            return (first.value + second.value,), 2
        return (first.value,), 1
    if first.kind == _TEEN or (first.kind == _UNIT and first.value > 0):
        return (first.value,), 1
    if first.kind == _UNIT and second is not None and second.kind == _UNIT and second.value > 0:
        return (0, second.value), 2
    return (), 0


def _with_tail(hundreds: int, tail: tuple[int, ...]) -> tuple[str, ...]:
    """Spell a hundreds value with its tail; zero + unit gives both readings."""
    if not tail:
        return (str(hundreds),)
    if len(tail) == 1:
        return (str(hundreds + tail[0]),)
    unit = tail[1]
    return (f"{hundreds}0{unit}", str(hundreds + unit))


def _segments(words: list[_Word]) -> tuple[list[_Segment], str | None]:
    """Group number words into digit segments by the module's rules."""
    segments: list[_Segment] = []
    error: str | None = None
    index = 0
    while index < len(words):
        word = words[index]
        following = words[index + 1] if index + 1 < len(words) else None
        start = index
        if word.kind == _ARTICLE:
            index += 1
            continue
        if word.kind == _LITERAL:
            readings: tuple[str, ...] = (word.text,)
            index += 1
        elif word.kind == _REPEAT:
            if following is None or following.kind != _UNIT:
                error = error or f"{word.text} needs a digit after it"
                index += 1
                continue
            readings = (str(following.value) * word.value,)
            index += 2
        elif word.kind in (_HUNDREDS, _HUNDRED):
            tail, used = _tail(words, index + 1)
            readings = _with_tail(word.value, tail)
            index += 1 + used
        elif word.kind == _UNIT and word.value == 0:
            more = any(later.kind != _ARTICLE for later in words[index + 1 :])
            if not segments and word.text in _INTERJECTION_ZEROS and more:
                readings = ("0", "")
            else:
                readings = ("0",)
            index += 1
        else:
            readings, index = _compound(words, index)
        phrase = " ".join(spoken.text for spoken in words[start:index])
        segments.append(_Segment(readings=readings, phrase=phrase))
    return segments, error


def _compound(words: list[_Word], index: int) -> tuple[tuple[str, ...], int]:
    """Read a unit 1-9, teen or tens (+ unit), and an English "hundred" multiplying it."""
    word = words[index]
    value = word.value
    unit = 0
    used = 1
    if word.kind == _TENS and index + 1 < len(words):
        following = words[index + 1]
        if following.kind == _UNIT and following.value > 0:
            unit = following.value
            value += unit
            used = 2
    after = index + used
    if after >= len(words) or words[after].kind != _HUNDRED:
        return (str(value),), after
    tail, tail_used = _tail(words, after + 1)
    readings = _with_tail(value * 100, tail)
    if unit:
        # "forty two hundred" may also be "forty", "two hundred".
        readings += tuple(str(word.value) + rest for rest in _with_tail(unit * 100, tail))
    return tuple(dict.fromkeys(readings)), after + 1 + tail_used


def _read(text: str, language: str) -> _Reading:
    """Read every plausible digit string from recognised text."""
    _check_language(language)
    lexicon = _NUMBER_WORDS[language]
    words: list[_Word] = []
    skipped: list[str] = []
    unknown: str | None = None
    for token in _tokenize(text):
        if token == UNKNOWN_WORD or token in _FILLERS[language]:
            skipped.append(token)
        elif token in _CONNECTORS[language]:
            continue
        elif token.isascii() and token.isdigit():
            words.append(_Word(text=token, kind=_LITERAL, value=0))
        elif token in lexicon:
            kind, value = lexicon[token]
            words.append(_Word(text=token, kind=kind, value=value))
        elif unknown is None:
            unknown = token
    segments, error = _segments(words)
    if unknown is not None:
        error = f"unknown word: {unknown}"
    # islice: a long garbled phrase could otherwise multiply into millions of readings.
    choices = itertools.product(*(segment.readings for segment in segments))
    spelled = ("".join(choice) for choice in itertools.islice(choices, MAX_READINGS * 8))
    readings = tuple(dict.fromkeys(digits for digits in spelled if digits))
    notes = tuple(
        f"'{segment.phrase}' = " + " or ".join(reading or "nothing" for reading in segment.readings)
        for segment in segments
        if len(segment.readings) > 1
    )
    return _Reading(
        readings=readings[:MAX_READINGS],
        notes=notes,
        skipped=tuple(skipped),
        error=error,
    )


def _result(reading: _Reading, readings: tuple[str, ...], reason: str | None) -> DigitParse:
    """Build a DigitParse from the readings still in play."""
    digits = readings[0] if readings else ""
    if reason is None and not digits:
        reason = "empty"
    if reason is None and len(readings) > 1:
        reason = "ambiguous: " + "; ".join(reading.notes)
    return DigitParse(
        digits=digits,
        ok=reason is None,
        ambiguous=len(readings) > 1,
        reason=reason,
        alternatives=readings[1:],
        skipped=reading.skipped,
    )


def parse_digits(text: str, language: str) -> DigitParse:
    """Turn recognised number words into digits; not ok when empty, unknown or ambiguous."""
    reading = _read(text, language)
    return _result(reading, reading.readings, reading.error)


def parse_order_number(text: str, language: str, length: int = 10) -> DigitParse:
    """Turn recognised words into an order number of exactly `length` digits."""
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    reading = _read(text, language)
    readings = reading.readings
    if reading.error is not None or not readings or not readings[0]:
        return _result(reading, readings, reading.error)
    fitting = tuple(candidate for candidate in readings if len(candidate) == length)
    if fitting:
        return _result(reading, fitting, None)
    lengths = " or ".join(str(size) for size in sorted({len(candidate) for candidate in readings}))
    return _result(reading, readings, f"expected {length} digits, got {lengths}")


def parse_yes_no(text: str, language: str) -> bool | None:
    """Read a yes/no answer: True, False, or None when it says neither (or both)."""
    _check_language(language)
    answers: set[bool] = set()
    negated = False
    for token in _tokenize(text):
        if token in _NEGATIONS[language]:
            negated = True
            continue
        if token in _YES_WORDS[language] or (negated and token in _NEGATABLE[language]):
            answers.add(not negated)
        elif token in _NO_WORDS[language] and not negated:
            answers.add(False)
        negated = False
    return answers.pop() if len(answers) == 1 else None
