"""Tests for ivr.speech.numbers: spoken number words to digits, yes/no, digit groups."""

import pytest

from ivr.speech.numbers import (
    MAX_READINGS,
    UNKNOWN_WORD,
    DigitParse,
    number_words,
    parse_digits,
    parse_order_number,
    parse_yes_no,
    yes_no_words,
)
from ivr.tickets import group_digits

RU_UNITS = ["ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
EN_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("один два три", "123"),
        ("ноль", "0"),
        ("нуль пять", "05"),
        ("две", "2"),
        ("одна одно один", "111"),
        ("десять", "10"),
        ("двенадцать ноль", "120"),
        ("двадцать три", "23"),
        ("двадцать", "20"),
        ("девяносто", "90"),
        ("двадцать ноль пять", "2005"),
        ("сорок два ноль семь", "4207"),
        ("шестьдесят шесть шестнадцать", "6616"),
        ("двадцать двенадцать", "2012"),
        ("двадцать три четыре", "234"),
        ("сто", "100"),
        ("сто три", "103"),
        ("сто двадцать", "120"),
        ("сто двадцать три", "123"),
        ("сто двенадцать", "112"),
        ("сто десять", "110"),
        ("семьсот семьдесят семь", "777"),
        ("девятьсот девяносто девять", "999"),
        ("двести двести", "200200"),
        ("сто двадцать ноль", "1200"),
        ("пятьсот сорок", "540"),
        ("четыреста два ноль", "4020"),
        ("ДВАДЦАТЬ   Три", "23"),
        ("  восемь\tвосемь  ", "88"),
        ("три, четыре-пять.", "345"),
        ("восемь 42", "842"),
        ("э ну сорок [unk] два", "42"),
        ("сорок два ноль семь сто двадцать три девяносто восемь", "420712398"),
        ("сорок два ноль семь сто двадцать три девяносто восемь пять", "4207123985"),
    ],
)
def test_parse_digits_russian(text: str, digits: str) -> None:
    """Russian digit-by-digit and grouped readings give one clear digit string."""
    result = parse_digits(text, "ru")
    assert (result.digits, result.ok, result.ambiguous, result.reason) == (
        digits,
        True,
        False,
        None,
    )
    assert result.alternatives == ()


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("one two three", "123"),
        ("zero", "0"),
        ("oh", "0"),
        ("o", "0"),
        ("five oh seven", "507"),
        ("seven oh", "70"),
        ("zero four two", "042"),
        ("nought one", "01"),
        ("forty two oh seven", "4207"),
        ("twenty zero five", "2005"),
        ("ten eleven", "1011"),
        ("one hundred twenty three", "123"),
        ("one hundred and twelve", "112"),
        ("a hundred and five", "105"),
        ("hundred", "100"),
        ("hundred twelve", "112"),
        ("five hundred", "500"),
        ("four two hundred", "4200"),
        ("twenty twenty", "2020"),
        ("nineteen ninety nine", "1999"),
        ("nineteen hundred", "1900"),
        ("nineteen hundred ninety nine", "1999"),
        ("twelve hundred and five", "1205"),
        ("twenty hundred", "2000"),
        ("twenty a hundred", "20100"),
        ("double seven", "77"),
        ("triple oh", "000"),
        ("double oh seven", "007"),
        ("four double two", "422"),
        ("Forty-Two", "42"),
        ("  nine   NINE  ", "99"),
        ("um uh [unk] six", "6"),
        ("well, three and four", "34"),
        ("forty two oh seven one two three nine eight five", "4207123985"),
    ],
)
def test_parse_digits_english(text: str, digits: str) -> None:
    """English digit-by-digit and grouped readings give one clear digit string."""
    result = parse_digits(text, "en")
    assert (result.digits, result.ok, result.ambiguous, result.reason) == (
        digits,
        True,
        False,
        None,
    )
    assert result.alternatives == ()


@pytest.mark.parametrize(
    ("text", "language", "digits", "alternatives", "reason"),
    [
        ("сто ноль пять", "ru", "10005", ("105",), "ambiguous: 'сто ноль пять' = 10005 or 105"),
        (
            "двести нуль один",
            "ru",
            "20001",
            ("201",),
            "ambiguous: 'двести нуль один' = 20001 or 201",
        ),
        ("пятьсот ноль один ноль", "ru", "500010", ("5010",), None),
        ("oh four two", "en", "042", ("42",), "ambiguous: 'oh' = 0 or nothing"),
        ("uh o seven", "en", "07", ("7",), "ambiguous: 'o' = 0 or nothing"),
        ("oh double seven", "en", "077", ("77",), None),
        ("forty two hundred", "en", "4200", ("40200",), None),
        ("ninety nine hundred", "en", "9900", ("90900",), None),
        ("twenty one hundred five", "en", "2105", ("20105",), None),
        ("one hundred oh five", "en", "10005", ("105",), None),
        ("a hundred oh one", "en", "10001", ("101",), None),
        ("forty two hundred oh five", "en", "420005", ("4205", "4020005", "40205"), None),
        ("oh forty two hundred", "en", "04200", ("040200", "4200", "40200"), None),
    ],
)
def test_parse_digits_ambiguous(
    text: str, language: str, digits: str, alternatives: tuple[str, ...], reason: str | None
) -> None:
    """Readings that truly mean two things are reported, with the rules' reading first."""
    result = parse_digits(text, language)
    assert (result.digits, result.ok, result.ambiguous) == (digits, False, True)
    assert result.alternatives == alternatives
    assert result.reason is not None and result.reason.startswith("ambiguous: ")
    if reason is not None:
        assert result.reason == reason


@pytest.mark.parametrize(
    ("text", "language", "digits", "reason"),
    [
        ("", "ru", "", "empty"),
        ("   ", "ru", "", "empty"),
        ("[unk]", "ru", "", "empty"),
        ("[unk] [unk]", "en", "", "empty"),
        ("э ну", "ru", "", "empty"),
        ("um uh", "en", "", "empty"),
        ("and a", "en", "", "empty"),
        ("тысяча", "ru", "", "unknown word: тысяча"),
        ("номер сорок два", "ru", "42", "unknown word: номер"),
        ("сорок два заказ ноль", "ru", "420", "unknown word: заказ"),
        ("one two", "ru", "", "unknown word: one"),
        ("один два", "en", "", "unknown word: один"),
        ("thousand", "en", "", "unknown word: thousand"),
        ("my order is four two", "en", "42", "unknown word: my"),
        ("four 2x", "en", "4", "unknown word: 2x"),
        ("double", "en", "", "double needs a digit after it"),
        ("double twenty", "en", "20", "double needs a digit after it"),
        ("seven triple", "en", "7", "triple needs a digit after it"),
    ],
)
def test_parse_digits_not_ok(text: str, language: str, digits: str, reason: str) -> None:
    """Empty input, unknown words and broken repeats are not ok, and say why."""
    result = parse_digits(text, language)
    assert (result.digits, result.ok, result.reason) == (digits, False, reason)


@pytest.mark.parametrize(
    ("text", "language", "skipped"),
    [
        ("один два", "ru", ()),
        ("[unk]", "ru", ("[unk]",)),
        ("[UNK] сорок", "ru", ("[unk]",)),
        ("э сорок ну два ээ", "ru", ("э", "ну", "ээ")),
        ("так вот пять", "ru", ("так", "вот")),
        ("um four uh two [unk]", "en", ("um", "uh", "[unk]")),
        ("a hundred and five", "en", ()),
    ],
)
def test_parse_digits_reports_skipped_words(
    text: str, language: str, skipped: tuple[str, ...]
) -> None:
    """Fillers and "[unk]" are dropped and listed; connectors are not listed."""
    assert parse_digits(text, language).skipped == skipped


@pytest.mark.parametrize(
    ("text", "language", "length", "digits", "ok", "reason"),
    [
        (
            "один два три четыре пять шесть семь восемь девять ноль",
            "ru",
            10,
            "1234567890",
            True,
            None,
        ),
        (
            "сорок два ноль семь сто двадцать три девяносто восемь пять",
            "ru",
            10,
            "4207123985",
            True,
            None,
        ),
        (
            "сто двадцать три четыреста пятьдесят шесть семь восемь девять ноль",
            "ru",
            10,
            "1234567890",
            True,
            None,
        ),
        (
            "один два три четыре пять шесть семь восемь девять",
            "ru",
            10,
            "123456789",
            False,
            "expected 10 digits, got 9",
        ),
        (
            "один два три четыре пять шесть семь восемь девять ноль один",
            "ru",
            10,
            "12345678901",
            False,
            "expected 10 digits, got 11",
        ),
        ("сорок два", "ru", 2, "42", True, None),
        ("", "ru", 10, "", False, "empty"),
        ("[unk]", "ru", 10, "", False, "empty"),
        ("тысяча два три", "ru", 10, "23", False, "unknown word: тысяча"),
        # Length resolves the ambiguity: only "105" leaves ten digits.
        ("сто ноль пять один два три четыре пять шесть семь", "ru", 10, "1051234567", True, None),
        ("сто ноль пять один два три четыре пять", "ru", 10, "1000512345", True, None),
        ("сто ноль пять один два три четыре пять", "ru", 8, "10512345", True, None),
        ("сто ноль пять", "ru", 4, "10005", False, "expected 4 digits, got 3 or 5"),
        ("one two three four five six seven eight nine zero", "en", 10, "1234567890", True, None),
        ("forty two oh seven one two three nine eight five", "en", 10, "4207123985", True, None),
        ("oh one two three four five six seven eight nine", "en", 10, "0123456789", True, None),
        (
            "oh one two three four five six seven eight nine zero",
            "en",
            10,
            "1234567890",
            True,
            None,
        ),
        ("double seven triple three one two three four five", "en", 10, "7733312345", True, None),
        (
            "one hundred twenty three four five six seven eight nine",
            "en",
            9,
            "123456789",
            True,
            None,
        ),
        (
            "one two three four five six seven eight nine",
            "en",
            10,
            "123456789",
            False,
            "expected 10 digits, got 9",
        ),
        ("forty two hundred double five one two three", "en", 10, "4020055123", True, None),
        ("forty two hundred double five one two three", "en", 9, "420055123", True, None),
        ("forty two hundred double five one two three four", "en", 10, "4200551234", True, None),
        (
            "forty two hundred one two three four five",
            "en",
            10,
            "42012345",
            False,
            "expected 10 digits, got 8 or 9",
        ),
        ("forty two hundred one two three four five six", "en", 10, "4020123456", True, None),
        ("my number", "en", 10, "", False, "unknown word: my"),
    ],
)
def test_parse_order_number(
    text: str, language: str, length: int, digits: str, ok: bool, reason: str | None
) -> None:
    """An order number is ok only with exactly `length` digits; length settles ambiguity."""
    result = parse_order_number(text, language, length=length)
    assert (result.digits, result.ok, result.reason) == (digits, ok, reason)
    if ok:
        assert (result.ambiguous, result.alternatives) == (False, ())


def test_parse_order_number_keeps_ambiguity_when_two_readings_fit() -> None:
    """Two readings with the right length stay ambiguous: length cannot choose."""
    result = parse_order_number("oh forty two hundred", "en", length=5)
    assert (result.digits, result.ok, result.ambiguous) == ("04200", False, True)
    assert result.alternatives == ("40200",)
    assert result.reason is not None and result.reason.startswith("ambiguous: ")


@pytest.mark.parametrize(
    "digits", ["1234567890", "0000000000", "9081726354", "5555555555", "1000000001"]
)
def test_parse_order_number_reads_every_digit_spoken_alone(digits: str) -> None:
    """Digit-by-digit readings round-trip in both languages."""
    russian = " ".join(RU_UNITS[int(digit)] for digit in digits)
    english = " ".join(EN_UNITS[int(digit)] for digit in digits)
    assert parse_order_number(russian, "ru") == DigitParse(digits=digits, ok=True)
    assert parse_order_number(english, "en") == DigitParse(digits=digits, ok=True)


def test_parse_digits_bounds_the_number_of_readings() -> None:
    """A long run of ambiguous groups does not explode into every combination."""
    result = parse_digits("сто ноль пять " * 30, "ru")
    assert result.ambiguous
    assert len(result.alternatives) == MAX_READINGS - 1


@pytest.mark.parametrize("language", ["ru", "en"])
def test_number_words_are_a_clean_vocabulary(language: str) -> None:
    """The grammar words are lower case, unique, non-empty single words."""
    words = number_words(language)
    assert words
    assert len(words) == len(set(words))
    assert all(word and word == word.lower() and " " not in word for word in words)
    assert UNKNOWN_WORD not in words


@pytest.mark.parametrize(
    ("language", "word"),
    [
        ("ru", "ноль"),
        ("ru", "нуль"),
        ("ru", "одна"),
        ("ru", "одно"),
        ("ru", "две"),
        ("ru", "девятнадцать"),
        ("ru", "девяносто"),
        ("ru", "сто"),
        ("ru", "двести"),
        ("ru", "девятьсот"),
        ("en", "zero"),
        ("en", "oh"),
        ("en", "o"),
        ("en", "nineteen"),
        ("en", "ninety"),
        ("en", "hundred"),
        ("en", "double"),
        ("en", "triple"),
        ("en", "and"),
        ("en", "a"),
    ],
)
def test_number_words_include(language: str, word: str) -> None:
    """Each variant callers use is in the grammar."""
    assert word in number_words(language)


@pytest.mark.parametrize(
    ("language", "word"),
    [("ru", "тысяча"), ("ru", "zero"), ("en", "thousand"), ("en", "ноль"), ("en", "um")],
)
def test_number_words_exclude(language: str, word: str) -> None:
    """Thousands, the other language and fillers are left out of the grammar."""
    assert word not in number_words(language)


@pytest.mark.parametrize("language", ["ru", "en"])
def test_every_number_word_is_understood(language: str) -> None:
    """No grammar word is ever reported as unknown by the parser."""
    for word in number_words(language):
        reason = parse_digits(
            f"{word} один" if language == "ru" else f"{word} one", language
        ).reason
        assert reason is None or not reason.startswith("unknown word"), word


@pytest.mark.parametrize(
    "call",
    [
        lambda: number_words("de"),
        lambda: yes_no_words("RU"),
        lambda: parse_digits("один", "uk"),
        lambda: parse_order_number("one", "en-US"),
        lambda: parse_yes_no("да", ""),
        lambda: parse_order_number("один", "ru", length=0),
        lambda: group_digits("123", (3, 0)),
    ],
)
def test_bad_arguments_raise_value_error(call) -> None:
    """Unknown languages and nonsense sizes are programming errors."""
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    ("text", "language", "answer"),
    [
        ("да", "ru", True),
        ("Да, верно", "ru", True),
        ("правильно", "ru", True),
        ("всё верно", "ru", True),
        ("ага", "ru", True),
        ("угу", "ru", True),
        ("ну да", "ru", True),
        ("конечно да", "ru", True),
        ("подтверждаю", "ru", True),
        ("нет", "ru", False),
        ("нет нет", "ru", False),
        ("неверно", "ru", False),
        ("не верно", "ru", False),
        ("не правильно", "ru", False),
        ("Нет, неправильно", "ru", False),
        ("не так", "ru", False),
        ("неа", "ru", False),
        ("так", "ru", None),
        ("да нет", "ru", None),
        ("не знаю", "ru", None),
        ("сорок два", "ru", None),
        ("", "ru", None),
        ("[unk]", "ru", None),
        ("yes", "en", True),
        ("Yeah", "en", True),
        ("yep that's right", "en", True),
        ("correct", "en", True),
        ("sure", "en", True),
        ("okay", "en", True),
        ("no", "en", False),
        ("NO", "en", False),
        ("nope", "en", False),
        ("no no no", "en", False),
        ("wrong", "en", False),
        ("that's not right", "en", False),
        ("not correct", "en", False),
        ("not wrong", "en", None),
        ("yes no", "en", None),
        ("maybe", "en", None),
        ("", "en", None),
        ("да", "en", None),
        ("yes", "ru", None),
    ],
)
def test_parse_yes_no(text: str, language: str, answer: bool | None) -> None:
    """Yes-words give True, no-words and negated yes-words False, anything else None."""
    assert parse_yes_no(text, language) is answer


@pytest.mark.parametrize("language", ["ru", "en"])
def test_yes_no_words_are_understood(language: str) -> None:
    """Every yes/no grammar word is clean; all but negations are answers on their own."""
    words = yes_no_words(language)
    assert len(words) == len(set(words))
    assert all(word and word == word.lower() for word in words)
    for word in set(words) - {"не", "так", "not"}:
        assert parse_yes_no(word, language) is not None, word


@pytest.mark.parametrize(
    ("digits", "sizes", "groups"),
    [
        ("1234567890", None, ["123", "456", "7890"]),
        ("123456789", None, ["123", "456", "789"]),
        ("12345678901", None, ["123", "456", "789", "01"]),
        ("1234567", None, ["123", "4567"]),
        ("1234", None, ["1234"]),
        ("123", None, ["123"]),
        ("12", None, ["12"]),
        ("1", None, ["1"]),
        ("", None, []),
        ("1234567890", (3, 3, 4), ["123", "456", "7890"]),
        ("1234567890", (2, 2), ["12", "34", "567890"]),
        ("1234567890", (4,), ["1234", "567890"]),
        ("12345", (3, 3, 4), ["123", "45"]),
        ("123", (3, 3), ["123"]),
        ("", (3,), []),
        ("1234567890", (), ["1234567890"]),
    ],
)
def test_group_digits(digits: str, sizes: tuple[int, ...] | None, groups: list[str]) -> None:
    """Default groups are threes with no lone last digit; sizes are used in order."""
    assert group_digits(digits, sizes) == groups
    assert "".join(groups) == digits
