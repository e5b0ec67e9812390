"""The console's call log and ticket list: filters, one WHERE builder, pages and counts.

Every value arrives as a bound parameter; the only text put into SQL is fixed fragments
chosen here (never anything a user typed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ivr.db.core import Database

# A word search looks at the newest tickets (and notes) containing the words, this many:
# a word in every other transcript would otherwise cost a sort of a year of calls.
WORD_MATCHES = 10_001

CALL_LOG_COLUMNS = (
    "c.call_sid, c.line, c.language, c.from_number, c.to_number, c.started_at, c.ended_at, "
    "c.status, c.duration, c.step, c.outcome, c.order_number, c.category, c.ticket_number, "
    "c.operator_id, c.operator_name, c.after_hours"
)


@dataclass(frozen=True)
class CallFilters:
    """What the call log is narrowed to; None means "any"."""

    started_from: str | None = None  # stored-timestamp text, inclusive
    started_before: str | None = None  # stored-timestamp text, exclusive
    line: str | None = None
    outcome: str | None = None
    operator_id: int | None = None
    category: str | None = None
    digits: str | None = None  # order / ticket number (prefix) or caller (see Where.digits)
    text: str | None = None  # words in the ticket's description (the caller's transcript)
    partial_numbers: bool = False  # admins: digits may match the end of a caller's number


@dataclass(frozen=True)
class TicketFilters:
    """What the ticket list is narrowed to; None means "any"."""

    status: str | None = None
    category: str | None = None
    operator_id: int | None = None
    after_hours: bool | None = None
    digits: str | None = None  # ticket / order number (prefix) or caller (see Where.digits)
    text: str | None = None  # words in the description or the notes
    partial_numbers: bool = False  # admins: digits may match the end of a caller's number


def like_escape(text: str) -> str:
    """Make LIKE's wildcards in user text literal (used with ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def phrase(text: str) -> str:
    """An FTS5 query for the text as one literal substring (the trigram indexes match any
    substring of three characters or more, case-folded; shorter text matches nothing)."""
    return '"' + text.replace('"', '""') + '"'


def whole_numbers(digits: str) -> list[str]:
    """How a whole number typed as digits may be stored: '+79161234567' from 79161234567,
    and from 89161234567 (the Russian trunk prefix) too."""
    forms = ["+" + digits, digits]
    if len(digits) == 11 and digits.startswith("8"):
        forms.append("+7" + digits[1:])
    return forms


@dataclass
class Where:
    """A WHERE clause built from fixed fragments, with its bound parameters."""

    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, clause: str, *params: Any) -> None:
        """AND one condition."""
        self.clauses.append(clause)
        self.params.extend(params)

    def equals(self, column: str, value: Any, use_index: bool = True) -> None:
        """AND column = value, unless the value is None ("any").

        `use_index=False` writes `+column` so SQLite does not pick that column's own index
        (kept for another query) and then sort a year of rows; the list's time-ordered
        index carries the column and decides it on index entries instead.
        """
        if value is not None:
            self.add(f"{'' if use_index else '+'}{column} = ?", value)

    def digits(
        self,
        table: str,
        alias: str,
        prefixed: tuple[str, ...],
        caller: str,
        text: str,
        partial_numbers: bool = False,
    ) -> None:
        """Rows where one of the `prefixed` columns starts with the digits, or the caller's
        number matches them: four digits are its last four (what operators see), more are
        the whole number (+7..., 7..., 8...) or, when `partial_numbers` (admins, audited),
        any ending. An ending of any other length would tell an operator, digit by digit,
        the part of the number that is masked from them."""
        # [digits, digits + ':') holds every digit string starting with them (':' follows '9').
        low, high = text, text + ":"
        parts = [
            f"SELECT rowid FROM {table} WHERE {column} >= ? AND {column} < ?"  # noqa: S608
            for column in prefixed
        ]
        params: list[Any] = [value for _ in prefixed for value in (low, high)]
        last_four = f"SELECT rowid FROM {table} WHERE substr({caller}, -4) = ?"  # noqa: S608
        if len(text) == 4:
            parts.append(last_four)
            params.append(text)
        elif len(text) > 4 and partial_numbers:
            parts.append(f"{last_four} AND {caller} LIKE ? ESCAPE '\\'")
            params += [text[-4:], "%" + like_escape(text)]
        elif len(text) > 4:
            whole = whole_numbers(text)
            parts.append(f"{last_four} AND {caller} IN ({', '.join('?' * len(whole))})")
            params += [text[-4:], *whole]
        self.add(f"{alias}.rowid IN ({' UNION '.join(parts)})", *params)

    @property
    def sql(self) -> str:
        """The clause, or "" when nothing narrows the rows."""
        return ("WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


def _call_where(filters: CallFilters) -> Where:
    where = Where()
    where.equals("c.line", filters.line)
    where.equals("c.outcome", filters.outcome)
    where.equals("c.operator_id", filters.operator_id)
    where.equals("c.category", filters.category)
    if filters.started_from:
        where.add("c.started_at >= ?", filters.started_from)
    if filters.started_before:
        where.add("c.started_at < ?", filters.started_before)
    if filters.digits:
        where.digits(
            "calls",
            "c",
            ("order_number", "ticket_number"),
            "from_number",
            filters.digits,
            filters.partial_numbers,
        )
    if filters.text:
        where.add(
            "c.call_sid IN (SELECT call_sid FROM tickets WHERE rowid IN "
            "(SELECT rowid FROM ticket_words WHERE ticket_words MATCH ? "
            "ORDER BY rowid DESC LIMIT ?))",
            phrase(filters.text),
            WORD_MATCHES,
        )
    return where


def _ticket_where(filters: TicketFilters) -> Where:
    where = Where()
    where.equals("t.status", filters.status, use_index=False)  # tickets_operator_status
    where.equals("t.category", filters.category)
    where.equals("t.operator_id", filters.operator_id, use_index=False)
    if filters.after_hours is not None:
        where.add("t.after_hours = ?", int(filters.after_hours))
    if filters.digits:
        where.digits(
            "tickets",
            "t",
            ("number", "order_number"),
            "caller_number",
            filters.digits,
            filters.partial_numbers,
        )
    if filters.text:
        where.add(
            "t.rowid IN (SELECT rowid FROM (SELECT rowid FROM ticket_words "
            "WHERE ticket_words MATCH ? ORDER BY rowid DESC LIMIT ?) "
            "UNION SELECT tickets.rowid FROM tickets WHERE number IN (SELECT ticket_number "
            "FROM ticket_notes WHERE id IN (SELECT rowid FROM note_words "
            "WHERE note_words MATCH ? ORDER BY rowid DESC LIMIT ?)))",
            phrase(filters.text),
            WORD_MATCHES,
            phrase(filters.text),
            WORD_MATCHES,
        )
    return where


# (FROM clause, columns, where builder, ORDER BY) of each list.
_LISTS = {
    CallFilters: ("calls c", CALL_LOG_COLUMNS, _call_where, "c.started_at DESC, c.rowid DESC"),
    TicketFilters: ("tickets t", "t.*", _ticket_where, "t.created_at DESC, t.rowid DESC"),
}


def search(
    db: Database, filters: CallFilters | TicketFilters, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """One page of calls or tickets (by the filters' type), newest first."""
    return list(_select(db, filters, limit, offset))


def iterate(db: Database, filters: CallFilters | TicketFilters, limit: int) -> Iterator[dict]:
    """Every matching row, newest first, one at a time (for the CSV export)."""
    return _select(db, filters, limit, 0)


def _select(db, filters, limit: int, offset: int) -> Iterator[dict[str, Any]]:
    source, columns, build, order = _LISTS[type(filters)]
    where = build(filters)
    cursor = db.conn.execute(
        f"SELECT {columns} FROM {source} {where.sql} "  # noqa: S608 - fixed fragments
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        [*where.params, limit, offset],
    )
    for found in cursor:
        yield dict(found)


def count(db: Database, filters: CallFilters | TicketFilters, up_to: int | None = None) -> int:
    """How many calls or tickets match the filters, counting no further than `up_to`.

    A bounded count stops after `up_to` matches, so a year of calls costs what a page of
    them does; the console shows "10 000+" when the count reaches its bound.
    """
    source, _, build, _ = _LISTS[type(filters)]
    where = build(filters)
    if up_to is None:
        sql, params = f"SELECT count(*) FROM {source} {where.sql}", where.params  # noqa: S608
    else:
        sql = f"SELECT count(*) FROM (SELECT 1 FROM {source} {where.sql} LIMIT ?)"  # noqa: S608
        params = [*where.params, up_to]
    return db.execute(sql, params).fetchone()[0]


def live_calls(db: Database, active_since: str, limit: int = 200) -> list[dict[str, Any]]:
    """Calls not yet ended that heard from Twilio since `active_since`, newest first."""
    cursor = db.execute(
        f"SELECT {CALL_LOG_COLUMNS}, c.updated_at FROM calls c "  # noqa: S608
        "WHERE c.ended_at IS NULL AND c.updated_at >= ? "
        "ORDER BY c.started_at DESC LIMIT ?",
        [active_since, limit],
    )
    return [dict(found) for found in cursor]
