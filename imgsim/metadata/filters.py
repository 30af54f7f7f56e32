"""The filter grammar, ``FIELD OP VALUE``, applied to a metadata table as a boolean row mask.

One clause per string (``--where`` is repeatable, clauses are ANDed)::

    clause := FIELD OP VALUE | FIELD in [VALUE, VALUE, ...]
    OP     := = | != | < | <= | > | >= | ~          (~ : contains, case-insensitive)
    FIELD, VALUE := a bare word, or text in "double" or 'single' quotes; a bare VALUE runs to the end

A small hand-written scanner: the text is never evaluated. Input comes from URLs, so its length, the number
of clauses and of list items are bounded, and every message shows the input quoted on one line.
Numbers compare as numbers; dates as dates at the precision written (``taken = 2023-07`` is all of July,
``taken <= 2023-07-31`` includes that day); text with = != ~ in; a list field (keywords) matches when any of
its items does. An image without a value for the field matches no clause on it, ``!=`` included.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgsim.metadata.fields import Kind, MetadataError
from imgsim.metadata.geo import Near, parse_near
from imgsim.metadata.table import MetadataTable

MAX_CHARS = 300
MAX_CLAUSES = 16
MAX_ITEMS = 64
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "~", "in")
_OP_CHARS = "=!<>~"
_BARE_STOP = frozenset(" \t=!<>~[],\"'")
_QUOTES = "\"'"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_WHOLE = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?"
                   r"(?:Z|[+-]\d{2}:?\d{2})?)?)?)?")
_ALLOWED = {
    Kind.TEXT: ("=", "!=", "~", "in"),
    Kind.LIST: ("=", "!=", "~", "in"),
    Kind.INT: ("=", "!=", "<", "<=", ">", ">=", "in"),
    Kind.FLOAT: ("=", "!=", "<", "<=", ">", ">=", "in"),
    Kind.DATE: ("=", "!=", "<", "<=", ">", ">=", "in"),
}
_DESCRIBED = {Kind.TEXT: "text", Kind.LIST: "a list of text", Kind.INT: "a number", Kind.FLOAT: "a number",
              Kind.DATE: "a date"}
_HELP = "write FIELD OP VALUE with OP one of = != < <= > >= ~, or FIELD in [a, b]"
_MAX_LISTED = 40


class FilterError(MetadataError):
    """A filter that cannot be used; the one-line message names the field or operator at fault."""


def _show(text: str) -> str:
    """User input quoted on one line, escaped and shortened: safe in a terminal and in a message."""
    return repr(text if len(text) <= 80 else text[:79] + "…")


def _quoted(text: str, kind: str) -> str:
    """``text`` bare when it reads back unchanged as a ``field``, ``value`` or list ``item``, else in quotes."""
    if kind == "field":
        bare = bool(text) and not set(text) & _BARE_STOP
    else:
        bare = (bool(text) and text == text.strip() and text[0] not in "[\"'"
                and not (kind == "item" and set(text) & set(",[]")))
    if bare:
        return text
    quote = '"' if '"' not in text else "'"
    if quote in text:
        raise ValueError(f"{_show(text)} holds both kinds of quote")
    return f"{quote}{text}{quote}"


@dataclass(frozen=True)
class Clause:
    """One ``FIELD OP VALUE`` test; the value stays text until the field's kind is known."""

    field: str
    op: str
    value: str | tuple[str, ...]

    @property
    def text(self) -> str:
        """The clause written back (canonical spacing and quotes): parses to an equal clause."""
        field = _quoted(self.field, "field")
        if self.op == "in":
            return f"{field} in [{', '.join(_quoted(v, 'item') for v in self.value)}]"
        return f"{field} {self.op} {_quoted(self.value, 'value')}"

    def mask(self, table: MetadataTable) -> np.ndarray:
        """True for the rows that pass; raises :class:`FilterError` for an unknown field or a wrong value."""
        kinds = table.kinds
        if self.field not in kinds:
            raise FilterError(f"unknown field {_show(self.field)}{_suggest(self.field, kinds)}; "
                              f"fields: {_listed(list(kinds))}")
        kind = kinds[self.field]
        if self.op not in _ALLOWED[kind]:
            raise FilterError(f"operator {self.op!r} does not apply to {self.field}, which is {_DESCRIBED[kind]} "
                              f"(use {' '.join(_ALLOWED[kind])})")
        values = self.value if self.op == "in" else (self.value,)
        if kind == Kind.DATE:
            result = _date_mask(table.timestamps(self.field), self.op, [_period(self.field, v) for v in values])
        elif kind.is_number:
            result = _compare(table.column(self.field), self.op, [_number(self.field, v) for v in values])
        elif kind == Kind.LIST:
            result = _list_mask(table.column(self.field), self.op, list(values))
        else:
            result = _compare(table.column(self.field), self.op, list(values))
        return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class Filter:
    """Clauses ANDed, and optionally a place: what ``--where`` and ``--near`` (or ``?where=``) ask for."""

    clauses: tuple[Clause, ...] = ()
    near: Near | None = None

    def __bool__(self) -> bool:
        return bool(self.clauses) or self.near is not None

    @property
    def texts(self) -> list[str]:
        """Each clause written back (for the URL)."""
        return [c.text for c in self.clauses]

    def mask(self, table: MetadataTable) -> np.ndarray:
        """True for the rows that pass every clause and the place; the first clause that cannot apply raises."""
        masks = [c.mask(table) for c in self.clauses]
        if self.near is not None:
            masks.append(self.near.mask(table))
        out = np.ones(len(table), dtype=bool)
        for m in masks:
            out &= m
        return out


def parse_where(texts: str | Sequence[str] | None, near: str | None = None) -> Filter:
    """A :class:`Filter` from ``--where`` strings (one clause each) and an optional ``--near LAT,LON,KM``."""
    items = [texts] if isinstance(texts, str) else list(texts or [])
    if len(items) > MAX_CLAUSES:
        raise FilterError(f"{len(items)} filters: at most {MAX_CLAUSES} can be combined")
    return Filter(tuple(parse_clause(t) for t in items), parse_near(near) if near is not None else None)


def parse_clause(text: str) -> Clause:
    """One ``FIELD OP VALUE`` (or ``FIELD in [...]``) clause, checked for syntax only."""
    if not isinstance(text, str):
        raise FilterError(f"a filter is text, not {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise FilterError(f"filter {_show(text)} is longer than {MAX_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text.replace("\t", " ")):
        raise FilterError(f"filter {_show(text)} holds control characters")
    s = text.strip()
    if not s:
        raise FilterError(f"empty filter: {_HELP}, e.g. 'taken >= 2023-07-01'")
    field, pos = _token(s, 0, text)
    pos = _skip(s, pos)
    if pos == len(s):
        raise FilterError(f"filter {_show(text)} has no operator after the field: {_HELP}")
    if s[pos] in _OP_CHARS:
        end = pos
        while end < len(s) and s[end] in _OP_CHARS:
            end += 1
        op = s[pos:end]
    else:
        end = pos
        while end < len(s) and s[end].isalpha():
            end += 1
        op = s[pos:end].lower() or s[pos]
    if op not in OPERATORS:
        raise FilterError(f"unknown operator {op!r} after {field!r} in {_show(text)}; "
                          f"operators: {' '.join(OPERATORS)}")
    rest = s[end:].strip()
    if op == "in":
        return Clause(field, op, _items(rest, field, text))
    if not rest:
        raise FilterError(f"filter {_show(text)} has no value after {field} {op}")
    if rest[0] == "[":
        raise FilterError(f"a list of values takes 'in': {field} in {rest}")
    if rest[0] in _QUOTES:
        value, after = _token(rest, 0, text)
        if after != len(rest):
            raise FilterError(f"unexpected {_show(rest[after:])} after the quoted value in {_show(text)}")
        return Clause(field, op, value)
    return Clause(field, op, rest)


def _skip(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in " \t":
        pos += 1
    return pos


def _token(s: str, pos: int, text: str) -> tuple[str, int]:
    """A quoted or bare word starting at ``pos``, and the position after it."""
    if pos < len(s) and s[pos] in _QUOTES:
        close = s.find(s[pos], pos + 1)
        if close < 0:
            raise FilterError(f"unclosed quote in filter {_show(text)}")
        return s[pos + 1:close], close + 1
    end = pos
    while end < len(s) and s[end] not in _BARE_STOP:
        end += 1
    if end == pos:
        raise FilterError(f"filter {_show(text)} does not start with a field name: {_HELP}")
    return s[pos:end], end


def _items(rest: str, field: str, text: str) -> tuple[str, ...]:
    """The values of ``[a, "b c", 3]``."""
    if not (rest.startswith("[") and rest.endswith("]")):
        raise FilterError(f"{field} in takes a list in brackets, e.g. {field} in [a, b]; got {_show(rest)}")
    inner, items, pos = rest[1:-1], [], 0
    while True:
        pos = _skip(inner, pos)
        if pos == len(inner) and not items:
            raise FilterError(f"empty list in filter {_show(text)}")
        if pos < len(inner) and inner[pos] in _QUOTES:
            item, pos = _token(inner, pos, text)
        else:  # a bare item runs to the next comma, spaces inside it included
            end = inner.find(",", pos)
            end = len(inner) if end < 0 else end
            item = inner[pos:end].strip()
            bracket = next((c for c in item if c in "[]"), None)
            if not item or bracket:
                raise FilterError(f"unexpected {bracket or ','!r} in the list of filter {_show(text)}")
            pos = end
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise FilterError(f"the list of filter {_show(text[:40])} has more than {MAX_ITEMS} values")
        pos = _skip(inner, pos)
        if pos == len(inner):
            return tuple(items)
        if inner[pos] != ",":
            raise FilterError(f"expected ',' or ']' at {_show(inner[pos:])} in filter {_show(text)}")
        pos += 1


def _suggest(field: str, kinds: dict[str, Kind]) -> str:
    close = difflib.get_close_matches(field, list(kinds), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown if len(names) <= _MAX_LISTED else f"{shown}, … ({len(names)} in all)"


def _number(field: str, text: str) -> int | float:
    text = text.strip()
    if _WHOLE.fullmatch(text) and abs(int(text)) < 2**63:
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    raise FilterError(f"{field} is a number: {_show(text)} is not one")


def _period(field: str, text: str) -> tuple[datetime, datetime]:
    """The span a written date covers: a year, a month, a day, a minute or a second (offsets ignored)."""
    match = _DATE.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        y, mo, d, h, mi, sec = (int(g) if g else None for g in match.groups())
        start = datetime(y, mo or 1, d or 1, h or 0, mi or 0, sec or 0)
    except ValueError:
        raise FilterError(f"{field} is a date: {_show(text)} is not one (write 2023, 2023-07, 2023-07-01 "
                          f"or 2023-07-01T10:00)") from None
    try:
        if mo is None:
            return start, start.replace(year=y + 1)
        if d is None:
            return start, start.replace(year=y + mo // 12, month=mo % 12 + 1)
        step = timedelta(days=1) if h is None else timedelta(minutes=1) if sec is None else timedelta(seconds=1)
        return start, start + step
    except (ValueError, OverflowError):  # the period it names ends after the last date Python can hold
        raise FilterError(f"{field} is a date: {_show(text)} is too late (the last period a filter can name "
                          f"ends 9999-12-31T23:59)") from None


def _date_mask(ts: pa.Array, op: str, periods: list[tuple[datetime, datetime]]) -> pa.Array:
    def at(t: datetime) -> pa.Scalar:
        return pa.scalar(t, type=pa.timestamp("s"))

    start, end = periods[0]
    if op == "<":
        return pc.less(ts, at(start))
    if op == "<=":
        return pc.less(ts, at(end))
    if op == ">":
        return pc.greater_equal(ts, at(end))
    if op == ">=":
        return pc.greater_equal(ts, at(start))
    inside = [pc.and_(pc.greater_equal(ts, at(a)), pc.less(ts, at(b))) for a, b in periods]
    any_inside = inside[0]
    for m in inside[1:]:
        any_inside = pc.or_(any_inside, m)
    return pc.invert(any_inside) if op == "!=" else any_inside


def _compare(column: pa.Array, op: str, values: list) -> pa.Array:
    """A text or number column against values (``in``: any of them)."""
    if op == "in":
        if pa.types.is_string(column.type):
            return pc.is_in(column, value_set=pa.array(values, type=pa.string()))
        if pa.types.is_integer(column.type) and all(isinstance(v, int) for v in values):
            return pc.is_in(column, value_set=pa.array(values, type=pa.int64()))
        return pc.is_in(column.cast(pa.float64()), value_set=pa.array(values, type=pa.float64()))
    if op == "~":
        return pc.match_substring(column, values[0], ignore_case=True)
    functions = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater,
                 ">=": pc.greater_equal}
    return functions[op](column, pa.scalar(values[0]))


def _list_mask(column: pa.Array, op: str, values: list[str]) -> pa.Array:
    """A list-of-text column: true where any item passes (``!=``: where the list has no equal item)."""
    items = pc.list_flatten(column)
    owners = pc.list_parent_indices(column).to_numpy()
    test = _compare(items, "=" if op == "!=" else op, values)
    hits = np.zeros(len(column), dtype=bool)
    hits[owners[np.asarray(pc.fill_null(test, False).to_numpy(zero_copy_only=False), dtype=bool)]] = True
    if op == "!=":
        hits = ~hits & np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return pa.array(hits)
