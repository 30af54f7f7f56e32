"""The filter grammar: every operator on every kind, exact messages for bad input, hostile input stays text."""

from __future__ import annotations

import pytest

from imgsim.metadata.fields import Kind
from imgsim.metadata.filters import MAX_CLAUSES, Clause, Filter, FilterError, parse_clause, parse_where
from imgsim.metadata.table import MetadataTable

ROWS = [
    {"folder": "2023/beach", "name": "a.jpg", "bytes": 100, "width": 4000, "taken": "2023-07-01T09:00:00+02:00",
     "camera": "Canon EOS 5D", "lat": 48.8584, "lon": 2.2945, "keywords": ["Beach", "sunset"]},
    {"folder": "2023/beach", "name": "b.jpg", "bytes": 2500, "width": 3000, "taken": "2023-07-31T23:59:59",
     "camera": "NIKON D850", "keywords": ["sea"]},
    {"folder": "2024", "name": "c d.png", "bytes": 70, "width": 640, "taken": "2024-01-01", "description": "<b>bold</b>"},
    {"folder": "", "name": "e.jpg"},
]
NAMES = ["a.jpg", "b.jpg", "c d.png", "e.jpg"]


def matching(*where: str) -> list[str]:
    """The names of the rows that pass the clauses."""
    mask = parse_where(list(where)).mask(MetadataTable.from_rows(ROWS))
    assert mask.dtype == bool and mask.shape == (len(ROWS),)
    return [n for n, m in zip(NAMES, mask) if m]


@pytest.mark.parametrize("where, names", [
    ("bytes = 100", ["a.jpg"]),
    ("bytes != 100", ["b.jpg", "c d.png"]),  # e.jpg has no size: it matches no clause on bytes
    ("bytes < 100", ["c d.png"]),
    ("bytes <= 100", ["a.jpg", "c d.png"]),
    ("bytes > 100", ["b.jpg"]),
    ("bytes >= 2500", ["b.jpg"]),
    ("bytes in [70, 2500]", ["b.jpg", "c d.png"]),
    ("bytes in [70.0, 100.5]", ["c d.png"]),
    ("width > 3e3", ["a.jpg"]),
    ("lat > 48.5", ["a.jpg"]),
    ("lat <= -48.5", []),
    ("camera = NIKON D850", ["b.jpg"]),  # a bare value runs to the end
    ("camera = nikon d850", []),  # = is exact
    ("camera ~ nikon", ["b.jpg"]),  # ~ is case-insensitive contains
    ("camera != NIKON D850", ["a.jpg"]),
    ("camera in [Canon EOS 5D, 'NIKON D850']", ["a.jpg", "b.jpg"]),  # bare items may hold spaces
    ("name = 'c d.png'", ["c d.png"]),
    ('folder = ""', ["e.jpg"]),
    ("folder ~ beach", ["a.jpg", "b.jpg"]),
    ("keywords = beach", []),
    ("keywords = Beach", ["a.jpg"]),  # a list matches when any item does
    ("keywords ~ SUN", ["a.jpg"]),
    ("keywords in [sea, sky]", ["b.jpg"]),
    ("keywords != sea", ["a.jpg"]),  # only rows that have keywords
])
def test_operators_on_text_numbers_and_lists(where, names):
    assert matching(where) == names


@pytest.mark.parametrize("where, names", [
    ("taken >= 2023-07-01", ["a.jpg", "b.jpg", "c d.png"]),
    ("taken > 2023-07-01", ["b.jpg", "c d.png"]),  # after that day
    ("taken <= 2023-07-31", ["a.jpg", "b.jpg"]),  # that whole day included
    ("taken < 2023-07-31", ["a.jpg"]),
    ("taken = 2023-07", ["a.jpg", "b.jpg"]),  # the month
    ("taken = 2023", ["a.jpg", "b.jpg"]),  # the year
    ("taken != 2023", ["c d.png"]),
    ("taken = 2023-07-01T09:00", ["a.jpg"]),  # the minute, in local time (the offset is ignored)
    ("taken = 2023-07-01T09:00:01", []),
    ("taken > 2023-07-31T23:59:58", ["b.jpg", "c d.png"]),
    ("taken in [2024, 2023-07-01]", ["a.jpg", "c d.png"]),
    ("taken >= '2023-12-31T23:59:59Z'", ["c d.png"]),
])
def test_dates_compare_as_dates_at_the_precision_written(where, names):
    assert matching(where) == names


def test_clauses_are_anded():
    assert matching("folder ~ beach", "bytes > 100") == ["b.jpg"]
    assert matching() == NAMES
    assert not parse_where([]) and parse_where("a = b")


@pytest.mark.parametrize("where, message", [
    ("widht > 3", "unknown field 'widht' (did you mean 'width'?); fields: folder, name, bytes, width, height, format, "
                  "taken, camera, lens, lat, lon, orientation, keywords, description"),
    ("colour = red", "unknown field 'colour'; fields: folder, name, bytes, width, height, format, taken, camera, lens, "
                     "lat, lon, orientation, keywords, description"),
    ("width ~ 3", "operator '~' does not apply to width, which is a number (use = != < <= > >= in)"),
    ("camera > c", "operator '>' does not apply to camera, which is text (use = != ~ in)"),
    ("keywords < a", "operator '<' does not apply to keywords, which is a list of text (use = != ~ in)"),
    ("taken ~ 2023", "operator '~' does not apply to taken, which is a date (use = != < <= > >= in)"),
    ("width > wide", "width is a number: 'wide' is not one"),
    ("width in [1, two]", "width is a number: 'two' is not one"),
    ("taken >= 2023-13-01", "taken is a date: '2023-13-01' is not one (write 2023, 2023-07, 2023-07-01 or "
                            "2023-07-01T10:00)"),
    ("taken >= July", "taken is a date: 'July' is not one (write 2023, 2023-07, 2023-07-01 or 2023-07-01T10:00)"),
    *[(where, f"taken is a date: '{value}' is too late (the last period a filter can name ends 9999-12-31T23:59)")
      for where, value in [("taken = 9999", "9999"), ("taken < 9999-12", "9999-12"), ("taken <= 9999-12-31", "9999-12-31"),
                           ("taken in [2023, 9999-12]", "9999-12")]],
])
def test_meaning_errors_name_the_field_or_operator(where, message):
    with pytest.raises(FilterError) as err:
        matching(where)
    assert str(err.value) == message


_HELP = "write FIELD OP VALUE with OP one of = != < <= > >= ~, or FIELD in [a, b]"


@pytest.mark.parametrize("where, message", [
    ("", f"empty filter: {_HELP}, e.g. 'taken >= 2023-07-01'"),
    ("width", f"filter 'width' has no operator after the field: {_HELP}"),
    ("= 3", f"filter '= 3' does not start with a field name: {_HELP}"),
    ("width == 3", "unknown operator '==' after 'width' in 'width == 3'; operators: = != < <= > >= ~ in"),
    ("width => 3", "unknown operator '=>' after 'width' in 'width => 3'; operators: = != < <= > >= ~ in"),
    ("name like x", "unknown operator 'like' after 'name' in 'name like x'; operators: = != < <= > >= ~ in"),
    ("width >", "filter 'width >' has no value after width >"),
    ("name = 'abc", "unclosed quote in filter \"name = 'abc\""),
    ("name = 'a' b", "unexpected ' b' after the quoted value in \"name = 'a' b\""),
    ("name = [a, b]", "a list of values takes 'in': name in [a, b]"),
    ("name in a, b", "name in takes a list in brackets, e.g. name in [a, b]; got 'a, b'"),
    ("name in []", "empty list in filter 'name in []'"),
    ("name in [a,,b]", "unexpected ',' in the list of filter 'name in [a,,b]'"),
    ("name in ['a' b]", "expected ',' or ']' at 'b' in filter \"name in ['a' b]\""),
    ("name in [a,]", "unexpected ',' in the list of filter 'name in [a,]'"),
    ("name in [[a]]", "unexpected '[' in the list of filter 'name in [[a]]'"),
    ("name = a\nb", "filter 'name = a\\nb' holds control characters"),
])
def test_syntax_errors_are_one_line_and_exact(where, message):
    with pytest.raises(FilterError) as err:
        parse_clause(where)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_input_is_bounded():
    with pytest.raises(FilterError, match=r"^filter 'name = xxx.*…' is longer than 300 characters$"):
        parse_clause("name = " + "x" * 400)
    with pytest.raises(FilterError, match=rf"^{MAX_CLAUSES + 1} filters: at most {MAX_CLAUSES} can be combined$"):
        parse_where(["bytes > 1"] * (MAX_CLAUSES + 1))
    with pytest.raises(FilterError, match="has more than 64 values"):
        parse_clause("bytes in [" + ", ".join(["1"] * 65) + "]")
    with pytest.raises(FilterError, match="a filter is text, not int"):
        parse_clause(3)


@pytest.mark.parametrize("value", [
    "__import__('os').system('touch /tmp/pwned')",
    "'; DROP TABLE images; --",
    "<script>alert(1)</script>",
    "[link](javascript:alert(1))",
    ".*",
    "(a+)+$",
    "%s%s%n",
    "${HOME}",
])
def test_hostile_values_are_plain_text(value, tmp_path):
    clause = Clause("description", "~", value)
    table = MetadataTable.from_rows(ROWS + [{"name": "z.jpg", "description": value}])
    assert clause.mask(table).tolist() == [False] * len(ROWS) + [True]  # matched literally, never evaluated
    assert parse_clause(clause.text) == clause
    assert not (tmp_path / "pwned").exists()


def test_html_in_a_value_matches_literally():
    assert matching("description = <b>bold</b>") == ["c d.png"]
    assert matching("description ~ <B>") == ["c d.png"]


@pytest.mark.parametrize("clause", [
    Clause("name", "=", "c d.png"),
    Clause("camera", "in", ("Canon EOS 5D", "a, b", "[x]", "it's")),
    Clause("folder", "=", ""),
    Clause("my field", "~", ' padded '),
    Clause("quote", "=", 'say "hi"'),
    Clause("taken", ">=", "2023-07-01"),
])
def test_text_writes_a_clause_back_that_parses_to_the_same(clause):
    assert parse_clause(clause.text) == clause
    assert parse_where(Filter((clause,)).texts) == Filter((clause,))


def test_sidecar_fields_are_filterable_even_with_odd_names():
    table = MetadataTable.from_rows(
        [{"name": "a", "my score": 3.5}, {"name": "b", "my score": 1.0}], kinds={"name": Kind.TEXT, "my score": Kind.FLOAT})
    assert parse_where('"my score" > 2').mask(table).tolist() == [True, False]
