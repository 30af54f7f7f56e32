"""Collection: the facts and lookups the dashboard asks of an opened index."""

from __future__ import annotations

import numpy as np

from imgsim.collection import Collection


def test_rows_matching_finds_names_case_insensitively_in_row_order(built_index):
    col = Collection.open(built_index)
    expected = [r for r, p in enumerate(col.paths) if "blues/" in p]
    assert col.rows_matching("BLUES/").tolist() == expected and len(expected) == 6
    assert col.rows_matching("  r3.JPG ").tolist() == [col.paths.index("reds/r3.jpg")]
    assert col.rows_matching("no such name").tolist() == []


def test_rows_matching_keeps_the_first_matches_within_a_limit(built_index):
    col = Collection.open(built_index)
    everything = col.rows_matching("")
    assert everything.tolist() == list(range(col.count))
    assert col.rows_matching("", limit=4).tolist() == [0, 1, 2, 3]
    assert col.rows_matching("b", limit=2).tolist() == [r for r, p in enumerate(col.paths) if "b" in p][:2]


def test_rows_matching_answers_a_repeated_filter_without_another_scan(built_index):
    col = Collection.open(built_index)
    first = col.rows_matching("reds")
    col.__dict__["_folded_paths"] = ["changed"] * col.count  # a second scan would now find nothing
    assert col.rows_matching("reds") is first
    assert isinstance(first, np.ndarray) and len(first) == 5
