"""The dashboard with metadata, driven headlessly with AppTest: the filter bar filters before similarity (results
are the library's filtered answer), lives in ``?where=`` (untrusted there), dims the map, and reaches the cards,
the Places view, duplicates and clusters; an index without metadata shows none of it."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags
from streamlit.testing.v1 import AppTest

from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.metadata.fields import MetadataError
from imgsim.metadata.filters import parse_where
from imgsim.serving.policy import plain

from .conftest import serve
from .test_app import new_app, results, texts
from .test_app_explore import breaks
from .test_filters_search import CITIES, StandIn, gps_exif, write_photo

CAMERAS = ("Canon EOS 5D", "NIKON D850")
CAPTIONS = {"g0/p000.jpg": "A heron standing in the reeds", "g1/p001.jpg": "Two otters on a riverbank",
            "g2/p002.jpg": "A red tram in the rain", "g0/p003.jpg": "A heron in flight"}


def metadata_folder(root: Path, count: int = 36) -> Path:
    """``count`` photos in three folders; three in four have a date, a camera and a GPS position near one of
    :data:`CITIES`; a sidecar gives four of them a caption."""
    names = list(CITIES)
    for i in range(count):
        exif = None
        if i % 4:
            lat, lon = CITIES[names[i % len(names)]]
            exif = gps_exif(lat + 0.001 * (i % 7), lon - 0.001 * (i % 5), f"{2020 + i % 4}:0{1 + i % 9}:15 12:00:00")
            exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = ("", CAMERAS[i % 2])
        write_photo(root / f"g{i % 3}" / f"p{i:03d}.jpg", seed=700 + i, size=(40 + i % 60, 40), exif=exif)
    lines = ["path,caption"] + [f"{p},{c}" for p, c in CAPTIONS.items()]
    (root.parent / "captions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def meta_index(tmp_path_factory) -> tuple[Path, Path]:
    """The photos and their index (a fast stand-in model, the sidecar's captions); tests must not modify it."""
    root = metadata_folder(tmp_path_factory.mktemp("meta") / "photos")
    index = root.parent / "ix"
    model = StandIn()
    build_index(root, index, weights="random", pooling="avg", metadata=root.parent / "captions.csv",
                model_factory=lambda w, p, b: model)
    return root, index


@pytest.fixture
def col(monkeypatch, tmp_path, meta_index) -> Collection:
    root, index = meta_index
    serve(monkeypatch, tmp_path, index, root)
    return Collection.open(index)


def result_rows(at: AppTest) -> list[int]:
    """The rows of the result cards, in order (each card but the query's has a Similar button keyed by its row)."""
    return [int(b.key[5:]) for b in at.button if b.key and b.key.startswith("more_") and b.key[5:].isdigit()]


def map_data(at: AppTest, key: str) -> dict:
    """What a map component was given to draw."""
    for el in at.get("bidi_component"):
        data = json.loads(el.proto.json)
        if "base" in data and el.proto.id.endswith(key) or f"-{key}-" in el.proto.id or key in el.proto.id:
            return data
    raise AssertionError(f"no map {key}")


WHERE = ["folder in [g0, g2]", "taken >= 2021-01-01"]


def test_a_filter_in_the_link_searches_only_the_matching_images(col):
    query = col.paths.index("g0/p003.jpg")
    at = new_app(q="g0/p003.jpg", where=WHERE).run()
    assert not at.exception and not at.error
    where = parse_where(WHERE)
    mask = col.filter_mask(where)
    expected = col.neighbors_of_row(query, 8, where)
    assert [n.row for n in expected.neighbors][0] == query  # it passes, so it comes first
    assert result_rows(at) == [n.row for n in expected.neighbors[1:]]
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in expected.neighbors]
    assert all(mask[r] for r in result_rows(at))
    assert f"**8 nearest images** of {int(mask.sum())} matching the filter (k = 8)." in texts(at)
    assert at.expander[0].label == f"Filter: {int(mask.sum())} of {col.count} images match"
    # Fewer images match than k: all of them, nearest first, and the header says so.
    narrow = ["folder = g1", "camera = NIKON D850", "taken < 2021-06-01"]
    rows = np.flatnonzero(col.filter_mask(parse_where(narrow)))
    at = new_app(q="g0/p003.jpg", where=narrow, k="10").run()
    assert sorted(result_rows(at)) == sorted(rows.tolist()) and 0 < len(rows) < 10
    assert f"**{len(rows)} nearest images** of {len(rows)} matching the filter (k = {len(rows)}, clamped from 10)." \
        in texts(at)


def test_the_widgets_write_the_filter_to_the_url_and_a_link_draws_them_again(col):
    at = new_app(q="g0/p003.jpg").run()
    assert at.expander[0].label == "Filter by date, camera, place or words"
    at.multiselect(key="filter_folder_0").set_value(["g1"]).run()
    at.multiselect(key="filter_camera_0").set_value(["Canon EOS 5D"]).run()
    at.checkbox(key="filter_located_0").check().run()
    assert at.query_params["where"] == ["folder in [g1]", "camera in [Canon EOS 5D]", "lat >= -90"]
    where = parse_where(at.query_params["where"])
    assert result_rows(at) == [n.row for n in col.neighbors_of_row(col.paths.index("g0/p003.jpg"), 8, where).neighbors]
    again = new_app(q="g0/p003.jpg", where=at.query_params["where"]).run()
    assert again.multiselect(key="filter_folder_0").value == ["g1"]
    assert again.multiselect(key="filter_camera_0").value == ["Canon EOS 5D"]
    assert again.checkbox(key="filter_located_0").value is True
    assert again.text_area(key="filter_other_0").value == ""
    assert result_rows(again) == result_rows(at)
    # The words box, the dates and a condition of one's own; the link keeps them in the same order.
    again.text_input(key="filter_words_0").input("heron").run()
    again.text_area(key="filter_other_0").input("width >= 45").run()
    assert again.query_params["where"] == ["folder in [g1]", "camera in [Canon EOS 5D]", "lat >= -90",
                                          "caption ~ heron", "width >= 45"]
    shown = plain("folder in [g1] · camera in [Canon EOS 5D] · lat >= -90 · caption ~ heron · width >= 45", 500)
    assert f"No image matches the filter ({shown}): change it above." in [i.value for i in again.info]  # the herons are in g0
    assert result_rows(again) == [] and "No image matching the filter." in texts(again)
    third = new_app(where=["caption ~ heron", "taken >= 2021-02-01", "taken <= 2022-12-31"]).run()
    assert third.text_input(key="filter_words_0").value == "heron"
    from datetime import date
    assert third.date_input(key="filter_taken_0").value == (date(2021, 2, 1), date(2022, 12, 31))
    third.button(key="filter_clear").click().run()
    assert "where" not in third.query_params and third.expander[0].label == "Filter by date, camera, place or words"


@pytest.mark.parametrize("value, message", [
    ("<script>alert(1)</script>", "does not start with a field name"),
    ("x" * 100_000, "is longer than 300 characters"),
    ("taken = July", "taken is a date: 'July' is not one"),
    ("width == 3", "unknown operator '==' after 'width'"),
    ("widht > 3", "unknown field 'widht' (did you mean 'width'?)"),
    ('caption ~ "[**bold**](http://evil.example)"', None),
    (["width > 1"] * 40, "40 filters: at most 16 can be combined"),
])
def test_a_hostile_or_broken_filter_in_the_link_gets_a_message_and_no_traceback(col, meta_index, value, message):
    at = new_app(where=value).run()
    assert not at.exception
    page = texts(at) + "\n".join(e.label for e in at.expander)
    assert str(meta_index[1]) not in page and str(meta_index[0]) not in page
    assert "<script>" not in page and "Traceback" not in page
    if message is None:  # a valid filter: what it quotes is text, never a link
        assert not at.error and "Filter: 0 of 36 images match" in page
        assert "[**bold**](http" not in page and plain("[**bold**](http://evil.example)") in page
        assert at.text_input(key="filter_words_0").value == "[**bold**](http://evil.example)"
        return
    with pytest.raises(MetadataError) as refused:  # the library's own message, shown as text
        col.filter_mask(parse_where(value))
    assert message in str(refused.value)
    assert [e.value for e in at.error] == ["The filter cannot be used, so every image is shown: "
                                           + plain(str(refused.value), 2000)]
    assert len(at.error[0].value) < 1000
    assert len(results(at)) == 8  # the images, unfiltered
    assert at.expander[0].label == "Filter by date, camera, place or words"


def test_the_map_dims_exactly_the_images_the_filter_leaves_out(col):
    where = parse_where(["folder = g1"])
    at = new_app(where="folder = g1").run()
    data = map_data(at, "search_map")
    assert data["dimmed"] == np.flatnonzero(~col.filter_mask(where)).tolist()
    assert new_app().run().get("bidi_component") and map_data(new_app().run(), "search_map")["dimmed"] == []
    full = new_app(tab="Map", where="folder = g1").run()
    assert map_data(full, "full_map")["dimmed"] == np.flatnonzero(~col.filter_mask(where)).tolist()
    assert f"The {col.count - 12} images the filter leaves out are faint." in texts(full)


def test_cards_show_date_camera_and_caption(col):
    query = col.paths.index("g0/p000.jpg")
    at = new_app(q="g0/p000.jpg", k="12").run()
    shown = [n.row for n in col.neighbors_of_row(query, 12).neighbors]
    lines = []
    for meta in col.metadata_of(shown):
        parts = [meta["taken"][:10]] if "taken" in meta else []
        parts += [meta["camera"]] if "camera" in meta else []
        parts += [meta["caption"]] if "caption" in meta else []
        if parts:
            lines.append(" · ".join(parts))
    captions = [c.value for c in at.caption]
    assert lines and all(line in captions for line in lines)
    assert "A heron standing in the reeds" in captions  # the query's own card: no date or camera in its file


def test_a_selection_on_places_becomes_the_location_filter(col):
    at = new_app(tab="Places").run()
    assert not at.exception
    rows, lat, lon = col.places()
    data = map_data(at, "places_map")
    assert data["dimmed"] == [] and sorted(data["paths"]) == sorted(col.paths)
    base = json.loads(data["base"])
    drawn = sorted(r for t in base["data"] for r in t["customdata"])
    assert drawn == sorted(rows.tolist())
    assert "fetches nothing from the internet" in texts(at)
    london = [int(r) for r, a in zip(rows, lat) if abs(a - CITIES["london"][0]) < 0.1]
    assert 0 < len(london) < len(rows)
    at.session_state["places_map"] = {"selection": {"generation": col.index.generation, "rows": london}}
    at.run()
    assert f"**{len(london)} selected photo(s)**" in texts(at)
    at.button(key="places_filter").click().run()
    where = parse_where(at.query_params["where"])
    assert [c.field + " " + c.op for c in where.clauses] == ["lat >=", "lat <=", "lon >=", "lon <="]
    assert np.flatnonzero(col.filter_mask(where)).tolist() == sorted(london)  # the London photos, no other
    assert f"Location: {plain(', '.join(where.texts), 300)} (select an area in the Places tab to change it)" in texts(at)
    assert at.expander[0].label == f"Filter: {len(london)} of {col.count} images match"
    assert map_data(at, "places_map")["dimmed"] == sorted(set(rows.tolist()) - set(london))
    at.button(key="filter_clear_location").click().run()
    assert "where" not in at.query_params


def test_duplicates_and_clusters_keep_to_the_filter(col):
    where = parse_where(["folder = g1"])
    mask = col.filter_mask(where)
    at = new_app(tab="Duplicates", t="0.5", where="folder = g1").run()
    assert not at.exception
    groups = col.duplicate_groups(0.5, where)
    # The reference: components of the pairs of matching images closer than the threshold, by brute force.
    vectors = np.asarray(col.index.vectors, dtype=np.float64)
    allowed = np.flatnonzero(mask)
    d = np.sqrt(np.maximum(0, 2 - 2 * vectors[allowed] @ vectors[allowed].T))
    linked = {int(allowed[i]) for i, j in zip(*np.nonzero(d <= 0.5)) if i != j}
    assert {r for g in groups for r in g.rows} == linked and linked
    assert [f"**Group {i}** · {len(g.rows)} images" for i, g in enumerate(groups, 1)] == [
        m.value for m in at.markdown if m.value.startswith("**Group")]
    assert f"{len(linked)} of the 12 images that match the filter are in a group (pairs of matching images only)." \
        in texts(at)
    assert len(col.duplicate_groups(0.5)) != len(groups) or {r for g in col.duplicate_groups(0.5) for r in g.rows} != linked
    clusters = new_app(tab="Clusters", ck="3", where="folder = g1").run()
    assert not clusters.exception
    model = col.clusters(3)
    expected = [f"**Cluster {c + 1}** · {int(mask[model.members(c)].sum())} of {int(model.sizes_[c])} images match "
                "the filter" for c in range(3) if mask[model.members(c)].any()]
    assert [m.value for m in clusters.markdown if m.value.startswith("**Cluster")] == expected
    listed = [c.value for c in clusters.caption if c.value.startswith("g")]
    assert listed and all(p.startswith("g1/") for p in listed)


def test_an_index_without_metadata_shows_none_of_it(monkeypatch, tmp_path):
    from .test_compat import old_index_at

    photos, index = old_index_at(tmp_path)
    serve(monkeypatch, tmp_path, index, photos)
    at = new_app().run()
    assert not at.exception and not at.error
    assert not [e for e in at.expander if e.label.startswith("Filter")]
    assert [t.label for t in at.tabs] == ["Search", "Map", "Clusters", "Duplicates", "Odd ones out",
                                          "About this collection"]
    linked = new_app(where="width > 10").run()
    assert not linked.exception and not linked.error
    assert [i.value for i in linked.info if "metadata" in i.value] == [
        "This index holds no metadata (it was built before imgsim read any), so it cannot filter. Updating it reads "
        "every image's date, camera and place without extracting any again: `python -m imgsim index SRC --index DIR` "
        "(add `--metadata captions.csv` for captions)."]
    assert str(tmp_path) not in texts(linked)


def _first_view(timeout: float = 300) -> AppTest:
    """Run the page until the first run's indexing job has committed and the tabs are drawn."""
    deadline = time.time() + timeout
    while True:
        at = new_app().run()
        assert not at.exception, at.exception
        if at.tabs or at.error or time.time() > deadline:
            return at
        time.sleep(1)


def _first_run(monkeypatch, tmp_path, **env: str) -> None:
    """The page's first run on its own collection (no index yet), indexing with the stand-in model."""
    import streamlit as st

    from dashboard import cached

    for key in ("IMGSIM_INDEX", "IMGSIM_IMAGES", "IMGSIM_METADATA"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = StandIn()
    model.pooling = "flatten"  # what a new ResNet50 index records; the stand-in's vectors serve as well
    monkeypatch.setattr(cached, "load_model", lambda *args: model)
    st.cache_resource.clear()
    st.cache_data.clear()


def test_the_first_run_on_the_demo_indexes_its_captions(monkeypatch, tmp_path):
    from dashboard.paths import DEMO_DIR

    _first_run(monkeypatch, tmp_path)
    at = _first_view()
    assert at.tabs and not at.error, [e.value for e in at.error]
    [index_dir] = (tmp_path / "cache" / "indexes").iterdir()
    col = Collection.open(index_dir)
    with open(DEMO_DIR / "captions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == col.count
    captions = dict(zip(col.paths, col.metadata.column("caption").to_pylist()))
    sources = dict(zip(col.paths, col.metadata.column("source").to_pylist()))
    for row in rows[::37]:  # a dozen photos across the folders
        assert (captions[row["path"]], sources[row["path"]]) == (row["caption"], row["source"])
    assert col.has_text_metadata


def test_imgsim_metadata_names_the_sidecar_of_the_servers_folder(monkeypatch, tmp_path, meta_index):
    root, _ = meta_index
    _first_run(monkeypatch, tmp_path, IMGSIM_IMAGES=str(root), IMGSIM_METADATA=str(root.parent / "captions.csv"))
    at = _first_view()
    assert at.tabs and not at.error
    [index_dir] = (tmp_path / "cache" / "indexes").iterdir()
    col = Collection.open(index_dir)
    captions = col.metadata.column("caption").to_pylist()
    assert {col.paths[i]: c for i, c in enumerate(captions) if c} == CAPTIONS
    missing = tmp_path / "nowhere.csv"
    _first_run(monkeypatch, tmp_path / "again", IMGSIM_IMAGES=str(root), IMGSIM_METADATA=str(missing))
    at = new_app().run()
    assert not at.exception and not at.tabs
    assert [e.value for e in at.error] == [plain(
        "The setting IMGSIM_METADATA names no file (its value is in the server log): set it to a CSV or JSON Lines "
        "file keyed by 'path' (relative to the image folder), or unset it.", 2000)]
    assert str(missing) not in texts(at)


def card_scores(at: AppTest) -> list[str]:
    """Each card's BM25 line (image-only index) or where its fused rank came from, in order."""
    return [m.value for m in at.markdown if ":small[BM25" in m.value or m.value.startswith((":small[vector",
                                                                                          ":small[keywords"))]


def test_an_image_only_index_with_captions_searches_their_words_as_the_library_does(col):
    at = new_app(text="heron").run()
    assert not at.exception and not at.error
    assert at.text_input(key="text").label == "Search the captions and keywords"
    expected = col.search_keywords("heron", 8).neighbors
    assert {col.paths[n.row] for n in expected} == {"g0/p000.jpg", "g0/p003.jpg"}  # the two herons
    assert result_rows(at) == [n.row for n in expected]
    assert card_scores(at) == [f":small[**#{n.rank}**]  \n:small[BM25 **{n.scores['keywords'].score:.2f}**]"
                               for n in expected]
    assert "**2 best matches** (k = 8)." in texts(at)
    assert "this index's model reads no text, so there are no distances" in texts(at)
    where = parse_where(["caption ~ flight"])
    at = new_app(text="heron", where="caption ~ flight").run()
    assert not at.exception and not at.error
    assert result_rows(at) == [n.row for n in col.search_keywords("heron", 8, where).neighbors] == [
        col.paths.index("g0/p003.jpg")]


@pytest.fixture(scope="module")
def clip_captioned(tmp_path_factory, photo_dir, random_clip) -> Path:
    """A CLIP index of ``photo_dir`` with a sidecar captioning some of its photos."""
    sidecar = tmp_path_factory.mktemp("clipmeta") / "captions.csv"
    sidecar.write_text("path,caption\nreds/r3.jpg,a red tram in the rain\nblues/b1.png,a blue tram at night\n"
                       "top.jpg,an otter on a riverbank\n", encoding="utf-8")
    index = sidecar.parent / "clip.imgsim"
    build_index(photo_dir, index, weights="random", backbone="clip", metadata=sidecar,
                model_factory=lambda w, p, b: random_clip)
    return index


def test_a_description_on_a_clip_index_fuses_clip_and_bm25_as_query_text_does(monkeypatch, tmp_path, photo_dir,
                                                                             clip_captioned, random_clip):
    import imgsim.models.base
    from imgsim.metadata.fusion import DEFAULT_WEIGHTS

    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *args, **kwargs: random_clip)
    serve(monkeypatch, tmp_path, clip_captioned, photo_dir)
    clip = Collection.open(clip_captioned)
    at = new_app(text="a tram", k="6").run()
    assert not at.exception and not at.error
    assert at.text_input(key="text").label == "Describe what you are looking for"
    expected, _ = clip.query_text("a tram", 6, model=lambda: random_clip, fusion=DEFAULT_WEIGHTS)
    hits = expected.neighbors
    assert {"reds/r3.jpg", "blues/b1.png"} <= {n.path for n in hits[:3]}  # the two trams, lifted by their captions
    assert result_rows(at) == [n.row for n in hits]
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in hits]
    lines = [(f"vector #{n.scores['vector'].rank}" if "vector" in n.scores else "vector —") + " · "
             + (f"keywords #{n.scores['keywords'].rank} ({n.scores['keywords'].score:.2f})"
                if "keywords" in n.scores else "keywords —") for n in hits]
    assert card_scores(at) == [f":small[{line}]" for line in lines]
    assert any("keywords #" in line for line in lines) and any("keywords —" in line for line in lines)
    assert ("Ranked by reciprocal rank fusion (k = 60; weights vector 1, keywords 1) of the model's ranking and BM25 "
            "over the images' captions and keywords: each card says its rank in each.") in texts(at)


def test_a_lasso_on_the_map_lists_only_the_images_that_match_the_filter(col):
    mask = col.filter_mask(parse_where(["folder = g1"]))
    chosen = list(range(6, 18))  # rows of g0 and g1
    matching = [r for r in chosen if mask[r]]
    assert 0 < len(matching) < len(chosen)
    at = new_app(tab="Map", where="folder = g1")
    at.session_state["full_map"] = {"selection": {"generation": col.index.generation, "rows": chosen}}
    at.run()
    assert not at.exception and not at.error
    assert f"**{len(chosen)} selected, {len(matching)} match the filter**" in texts(at)
    assert [c.value for c in at.caption if c.value.startswith("g")] == [breaks(col.paths[r]) for r in matching]
    at.button(key="lasso_more_like").click().run()
    assert at.query_params["q"] == [col.paths[r] for r in matching]
    none = [r for r in chosen if not mask[r]]
    at = new_app(tab="Map", where="folder = g1")
    at.session_state["full_map"] = {"selection": {"generation": col.index.generation, "rows": none}}
    at.run()
    assert f"**{len(none)} selected, 0 match the filter**" in texts(at)
    assert "None of the selected images match the filter: select elsewhere or change it." in texts(at)
    assert not [b for b in at.button if b.key == "lasso_more_like"]
    unfiltered = new_app(tab="Map")
    unfiltered.session_state["full_map"] = {"selection": {"generation": col.index.generation, "rows": chosen}}
    unfiltered.run()
    assert f"**{len(chosen)} selected image(s)**" in texts(unfiltered)
    assert [c.value for c in unfiltered.caption if c.value.startswith("g")] == [
        breaks(col.paths[r]) for r in chosen]


def test_a_fused_description_under_a_filter_ranks_only_the_matching_images(monkeypatch, tmp_path, photo_dir,
                                                                           clip_captioned, random_clip):
    """The fused ranking with ?where=: both its sides (CLIP and BM25) search the matching images only."""
    import imgsim.models.base
    from imgsim.metadata.fusion import DEFAULT_WEIGHTS

    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *args, **kwargs: random_clip)
    serve(monkeypatch, tmp_path, clip_captioned, photo_dir)
    clip = Collection.open(clip_captioned)
    where = parse_where(["folder = blues"])
    at = new_app(text="a tram", k="6", where="folder = blues").run()
    assert not at.exception and not at.error
    expected, _ = clip.query_text("a tram", 6, model=lambda: random_clip, where=where, fusion=DEFAULT_WEIGHTS)
    hits = expected.neighbors
    assert hits and all(n.path.startswith("blues/") for n in hits)
    assert result_rows(at) == [n.row for n in hits]
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in hits]
