"""The filter bar: what is known about the photos (folder, date, camera, place, words) narrows every view before
similarity. Its clauses are the grammar of :mod:`imgsim.metadata.filters`, kept in the URL (``?where=`` once per
clause, ``?near=LAT,LON,KM``), where they are untrusted: bounded, parsed by ``parse_where`` (never evaluated), and
every message about them shown as text."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import streamlit as st

from dashboard import state
from dashboard.messages import say
from imgsim.collection import Collection
from imgsim.metadata.fields import Kind, MetadataError
from imgsim.metadata.filters import MAX_CHARS, MAX_CLAUSES, Clause, Filter, parse_clause, parse_where
from imgsim.serving.policy import plain

#: The text fields the words box offers, in this order when present (then any other text or list column).
WORD_FIELDS = ("caption", "description", "keywords", "tags")
#: Fields with a widget of their own, or that hold no words worth searching.
NOT_WORDS = ("folder", "camera", "format", "lens")
#: Choices listed by the folder and camera boxes.
CHOICES = 200
HAS_LOCATION = "lat >= -90"
NO_METADATA = ("This index holds no metadata (it was built before imgsim read any), so it cannot filter. Updating "
               "it reads every image's date, camera and place without extracting any again: "
               "`python -m imgsim index SRC --index DIR` (add `--metadata captions.csv` for captions).")


@dataclass(frozen=True)
class Active:
    """The filter the views apply: ``where`` None when there is none (or it cannot be used), else its mask."""

    where: Filter | None
    mask: np.ndarray | None
    count: int  # images in the collection

    @property
    def passing(self) -> int:
        """How many images pass (all without a filter)."""
        return self.count if self.mask is None else int(self.mask.sum())

    def allows(self, row: int) -> bool:
        """Whether image ``row`` passes."""
        return self.mask is None or bool(self.mask[row])

    def keep(self, rows) -> list[int]:
        """``rows`` that pass, in their order."""
        return [int(r) for r in rows if self.allows(int(r))]

    @property
    def summary(self) -> str:
        """The clauses as one line of Markdown-safe text."""
        if self.where is None:
            return ""
        parts = self.where.texts + ([f"near {self.where.near.text}"] if self.where.near is not None else [])
        return plain(" · ".join(parts), 500)


NONE = Active(None, None, 0)


# --- this session's filter: its own, else the link's ----------------------------------------------------------------

def current() -> dict:
    """``{"where": [clause text, ...], "near": text or None}``; a link's is read once, bounded (the bounds keep
    parse_where's message true: a clause cut to one character over the limit is still refused as too long)."""
    if state.FILTER not in st.session_state:
        asked = st.query_params.get_all(state.WHERE)
        near = st.query_params.get(state.NEAR) or None
        st.session_state[state.FILTER] = {
            "where": [w[: MAX_CHARS + 1] for w in asked[: MAX_CLAUSES + 1]],
            "near": near[:101] if near else None,
            "too_many": len(asked) if len(asked) > MAX_CLAUSES else None}
    return st.session_state[state.FILTER]


def set_filter(where: list[str], near: str | None, redraw: bool = True) -> None:
    """Make ``where`` (clause texts) and ``near`` this session's filter, in the URL too; ``redraw`` draws the bar's
    widgets afresh from it (a change that did not come from them)."""
    st.session_state[state.FILTER] = {"where": list(where), "near": near, "too_many": None}
    for key, value in ((state.WHERE, list(where)), (state.NEAR, near)):
        if value:
            st.query_params[key] = value
        elif key in st.query_params:
            del st.query_params[key]
    if redraw:
        st.session_state[state.FILTER_KEY] = st.session_state.get(state.FILTER_KEY, 0) + 1


def set_box(lat: tuple[float, float], lon: tuple[float, float]) -> None:
    """A callback: the box from ``lat`` to ``lon`` (degrees) becomes the location filter, replacing any other."""
    kept = [w for w in current()["where"] if _box_part(w) is None]
    set_filter(kept + box_clauses(lat, lon), None)


def box_clauses(lat: tuple[float, float], lon: tuple[float, float]) -> list[str]:
    """The four clauses of a box, widened outward to 1e-5 degrees (about a metre) so the corners' photos pass."""
    def down(v: float) -> str:
        return f"{math.floor(v * 1e5) / 1e5 - 1e-5:.5f}"

    def up(v: float) -> str:
        return f"{math.ceil(v * 1e5) / 1e5 + 1e-5:.5f}"

    return [f"lat >= {down(lat[0])}", f"lat <= {up(lat[1])}", f"lon >= {down(lon[0])}", f"lon <= {up(lon[1])}"]


def clear_location() -> None:
    """A callback: drop the location box and the place filter."""
    set_filter([w for w in current()["where"] if _box_part(w) is None], None)


def clear_all() -> None:
    """A callback: no filter."""
    set_filter([], None)


# --- the filter as the views apply it -------------------------------------------------------------------------------

def active(col: Collection) -> tuple[Active, str | None]:
    """The session's filter checked against this collection, and the message saying why it cannot be used."""
    raw = current()
    if not raw["where"] and not raw["near"]:
        return Active(None, None, col.count), None
    if col.metadata is None:
        return Active(None, None, col.count), NO_METADATA
    try:
        if raw.get("too_many"):
            parse_where([""] * raw["too_many"])  # its own message, with the link's count
        where = parse_where(raw["where"], raw["near"])
        return Active(where or None, col.filter_mask(where), col.count), None
    except MetadataError as exc:
        return Active(None, None, col.count), say(str(exc))


def filter_bar(col: Collection) -> Active:
    """The filter bar (only where the index has metadata), and the filter it sets; a link's filter that cannot be
    used is said, and the images are shown unfiltered."""
    applied, problem = active(col)
    if col.metadata is None:
        if problem:
            st.info(problem)
        return applied
    fields = {f.name: f for f in col.metadata_fields() if f.count}
    label = (f"Filter: {applied.passing:,} of {applied.count:,} images match" if applied.where is not None
             else "Filter by date, camera, place or words" if {"taken", "camera", "lat"} & set(fields)
             else "Filter by folder, size or words")
    with st.expander(label, expanded=problem is not None, icon=":material/filter_alt:"):  # the label says what is on
        _widgets(col, fields)
    if problem:
        st.error(f"The filter cannot be used, so every image is shown: {problem}")
    return applied


@dataclass
class _Parts:
    """The session's clauses sorted to the widgets that show them; what none shows stays text (``other``)."""

    folder: list | None = None
    camera: list | None = None
    taken: tuple[date, date] | None = None
    located: bool = False
    box: list[str] | None = None
    words: tuple[str, str] | None = None
    other: list[str] | None = None


def _box_part(text: str) -> str | None:
    """``lat >=``, ``lat <=``, ``lon >=`` or ``lon <=`` when ``text`` is a number bound of a box, else None."""
    try:
        c = parse_clause(text)
        float(c.value)
    except (MetadataError, TypeError, ValueError):
        return None
    return f"{c.field} {c.op}" if c.field in ("lat", "lon") and c.op in (">=", "<=") and text != HAS_LOCATION else None


def _split(col: Collection, where: list[str], fields: dict, words: list[str], span: tuple[date, date] | None
           ) -> _Parts:
    parts, other = _Parts(), []
    choices = {name: {v for v, _ in col.metadata.values(name, CHOICES)} for name in ("folder", "camera")
               if name in fields}
    boxes = {_box_part(w): w for w in where if _box_part(w)}
    if len(boxes) == 4 and len([w for w in where if _box_part(w)]) == 4:
        parts.box = [boxes[p] for p in ("lat >=", "lat <=", "lon >=", "lon <=")]
    low = high = None
    for text in where:
        if parts.box and text in parts.box:
            continue
        try:
            c = parse_clause(text)
        except MetadataError:
            other.append(text)
            continue
        values = list(c.value) if c.op == "in" else [c.value]
        if (c.field in choices and c.op in ("in", "=") and getattr(parts, c.field) is None
                and set(values) <= choices[c.field]):
            setattr(parts, c.field, values)
        elif text == HAS_LOCATION and "lat" in fields:
            parts.located = True
        elif c.field == "taken" and span and c.op in (">=", "<=") and _day(c.value, span) is not None and (
                low is None if c.op == ">=" else high is None):
            low, high = (_day(c.value, span), high) if c.op == ">=" else (low, _day(c.value, span))
        elif c.op == "~" and c.field in words and parts.words is None:
            parts.words = (c.field, c.value)
        else:
            other.append(text)
    if low or high:
        parts.taken = (low or span[0], high or span[1])
    parts.other = other
    return parts


def _day(text: str, span: tuple[date, date]) -> date | None:
    """A ``YYYY-MM-DD`` inside the span, else None."""
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None
    return day if day is not None and span[0] <= day <= span[1] else None


def _span(col: Collection, fields: dict) -> tuple[date, date] | None:
    span = col.metadata.span("taken") if "taken" in fields else None
    return (date.fromisoformat(span[0][:10]), date.fromisoformat(span[1][:10])) if span else None


def _word_fields(col: Collection, fields: dict) -> list[str]:
    found = [n for n, f in fields.items() if f.kind in (Kind.TEXT, Kind.LIST) and n not in NOT_WORDS]
    return sorted(found, key=lambda n: (n not in WORD_FIELDS, WORD_FIELDS.index(n) if n in WORD_FIELDS else 0, n))


def _key(name: str) -> str:
    return f"filter_{name}_{st.session_state.get(state.FILTER_KEY, 0)}"


def _widgets(col: Collection, fields: dict) -> None:
    raw = current()
    span = _span(col, fields)
    words = _word_fields(col, fields)
    parts = _split(col, raw["where"], fields, words, span)
    args = (span, parts.box)
    left, middle, right = st.columns(3)
    for column, name, what in ((left, "folder", "Folders"), (middle, "camera", "Cameras")):
        if name in fields and len(col.metadata.values(name, 2)) > 1:
            options = [v for v, _ in col.metadata.values(name, CHOICES)]
            column.multiselect(what, options, getattr(parts, name) or [], key=_key(name), on_change=_changed,
                               args=args, placeholder="any")
    if span and span[0] < span[1]:
        right.date_input("Taken between", parts.taken or span, min_value=span[0], max_value=span[1],
                         key=_key("taken"), on_change=_changed, args=args)
    if words:
        a, b = st.columns([1, 2])
        a.selectbox("Words in", words, words.index(parts.words[0]) if parts.words else 0, key=_key("words_field"),
                            on_change=_changed, args=args)
        b.text_input("contains", parts.words[1] if parts.words else "", key=_key("words"),
                     on_change=_changed, args=args, placeholder="e.g. heron", max_chars=MAX_CHARS - 40,
                     help="Case-insensitive: the text, as typed, anywhere in the field.")
    if "lat" in fields:
        st.checkbox(f"Only photos with a location ({fields['lat'].count:,})", parts.located, key=_key("located"),
                    on_change=_changed, args=args)
        place = (", ".join(parts.box) if parts.box else f"within {raw['near'].split(',')[-1]} km of "
                 f"{','.join(raw['near'].split(',')[:2])}" if raw["near"] else None)
        if place:
            a, b = st.columns([4, 1])
            a.caption(f"Location: {plain(place, 300)} (select an area in the Places tab to change it)")
            b.button("Clear location", key="filter_clear_location", on_click=clear_location, type="tertiary")
    st.text_area("Other conditions, one per line", "\n".join(parts.other), key=_key("other"), on_change=_changed,
                 args=args, height=68, placeholder="e.g. width >= 300",
                 help="FIELD OP VALUE, OP one of = != < <= > >= ~ (contains), or FIELD in [a, b]. Fields: "
                      + ", ".join(f"{plain(n)} ({f.kind})" for n, f in fields.items()))
    if raw["where"] or raw["near"]:
        st.button("Clear the filter", key="filter_clear", on_click=clear_all, icon=":material/filter_alt_off:")


def _changed(span: tuple[date, date] | None, box: list[str] | None) -> None:
    """A widget changed: the filter is what the widgets now show, with the location box they were drawn with."""
    ss, raw = st.session_state, current()
    where = []
    for name in ("folder", "camera"):
        chosen = ss.get(_key(name))
        if chosen:
            where.append(_clause(name, "in", tuple(chosen)))
    taken = ss.get(_key("taken"))
    if span and isinstance(taken, (tuple, list)) and len(taken) == 2:  # one day while a range is being picked
        if taken[0] > span[0]:
            where.append(f"taken >= {taken[0].isoformat()}")
        if taken[1] < span[1]:
            where.append(f"taken <= {taken[1].isoformat()}")
    if ss.get(_key("located")):
        where.append(HAS_LOCATION)
    where += box or []
    text = " ".join(str(ss.get(_key("words")) or "").split())
    if text and ss.get(_key("words_field")):
        where.append(_clause(ss[_key("words_field")], "~", text))
    where += [line.strip() for line in str(ss.get(_key("other")) or "").splitlines() if line.strip()]
    set_filter([w for w in where if w], raw["near"], redraw=False)


def _clause(field: str, op: str, value) -> str:
    try:
        return Clause(field, op, value).text
    except ValueError:  # a value holding both kinds of quote cannot be written back; the grammar says so
        return f"{field} {op} {value!r}"
