"""Collection: the facts and lookups the dashboard asks of an opened index."""

from __future__ import annotations

import numpy as np
import pytest

from imgsim.collection import Collection

from .conftest import make_photo


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


def test_metadata_facts_masks_and_places_for_the_page(built_index, photo_dir):
    from imgsim.errors import ImgsimError
    from imgsim.metadata.filters import parse_where

    col = Collection.open(built_index)
    fields = {f.name: (f.kind.value, f.count) for f in col.metadata_fields()}
    assert fields["folder"] == ("text", 12) and fields["taken"] == ("date", 0)
    row = col.paths.index("blues/b1.png")
    assert col.metadata_of([row]) == [{"folder": "blues", "name": "b1.png", "format": "PNG", "width": 160,
                                       "height": 120, "bytes": (photo_dir / "blues" / "b1.png").stat().st_size}]
    where = parse_where(["folder = blues"])
    mask = col.filter_mask(where)
    assert mask.tolist() == [p.startswith("blues/") for p in col.paths]
    assert col.filter_mask(parse_where(["folder = blues"])) is mask  # an equal filter: the kept mask
    assert col.filter_mask(parse_where([])) is None and col.filter_mask(None) is None
    rows, lat, lon = col.places()
    assert len(rows) == len(lat) == len(lon) == 0  # no photo here has a GPS position
    assert not col.has_text_metadata
    with pytest.raises(ImgsimError, match="have no text to search .* add some with --metadata FILE"):
        col.search_keywords("blue", 3)


def test_a_model_with_other_weights_is_refused_before_it_embeds_anything(built_index, monkeypatch, tmp_path):
    from imgsim.models.weights import WeightsError

    monkeypatch.setenv("IMGSIM_RUNTIME", "keras")  # the refusal needs the model's weights, not a conversion
    col = Collection.open(built_index)
    with pytest.raises(WeightsError) as refused:
        col.query_bytes(make_photo(tmp_path / "new.jpg", seed=4321).read_bytes(), 3,
                        extractor=lambda: col.extractor("random:1"))
    assert str(refused.value) == (
        "The weights loaded (random (seed 1) - similarities are not meaningful) are not the ones that built this "
        "index (random (seed 0) - similarities are not meaningful). Pass the same weights (--weights / IMGSIM_WEIGHTS).")
