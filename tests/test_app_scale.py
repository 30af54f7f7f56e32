"""The dashboard on an approximate-search index whose image files are gone (as after a user deletes photos,
or on bench/scale.py's synthetic index): placeholders, not errors; the search method and recall on About."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.errors import ImgsimError
from imgsim.serving.policy import plain

from .conftest import make_photo, serve
from .test_ann import VectorModel

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def ann_index_without_files(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    for i in range(40):
        make_photo(photos / f"g{i % 2}" / f"p{i:02d}.jpg", seed=2000 + i, size=(48, 40))
    index_dir = tmp_path / "ix"
    build_index(photos, index_dir, weights="random", pooling="avg", search="ann",
                model_factory=lambda w, p, b: VectorModel())
    shutil.rmtree(photos)  # every file is gone; the index still holds their vectors
    photos.mkdir()
    serve(monkeypatch, tmp_path, index_dir)
    return index_dir


def test_missing_image_files_show_placeholders_not_errors(ann_index_without_files):
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["q"] = "g1/p03.jpg"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = [c.value for c in at.caption]
    assert "query: g1/p03.jpg (image file unavailable)" in captions
    assert len(at.image) > 1  # the query and the result cards are drawn, with the placeholder image


def test_about_panel_names_the_search_method_and_measured_recall(ann_index_without_files):
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["tab"] = "About this collection"
    at.run()
    assert not at.exception
    text = "\n".join(m.value for m in at.markdown)
    assert "Search: approximate for this large collection (faiss IndexIVFScalarQuantizer (8-bit codes)" in text
    assert "recall@10 against exact search, measured at build time on 40 sample queries" in text
    assert "Distances shown are always exact." in text
    graph = Collection.open(ann_index_without_files).search_info()["graph_recall_at_10"]
    assert 0.9 <= graph <= 1.0
    assert (f"The neighbour graph behind Duplicates and Odd ones out (40 candidates per image): recall@10 "
            f"{graph} on the same queries.") in text


def test_an_approximate_index_opens_on_its_central_image_and_says_why_it_has_no_clusters(ann_index_without_files):
    """No query in the link: the first view answers with the image nearest the mean (found by the index's
    search, not a scan of every vector); the Clusters tab says what it needs instead of failing."""
    import numpy as np

    from imgsim.collection import Collection

    col = Collection.open(ann_index_without_files)
    mean = np.asarray(col.index.array("pca_mean"), dtype=np.float64)
    brute = int(np.argmin(((np.asarray(col.index.vectors, dtype=np.float64) - mean) ** 2).sum(axis=1)))
    assert col.central_row() == brute
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(c.value.startswith(f"query: {col.paths[brute]}") for c in at.caption)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["tab"] = "Clusters"
    at.run()
    assert not at.exception and not at.error
    assert any("Clusters need the PCA coordinates of every image" in i.value for i in at.info)
    with pytest.raises(ImgsimError, match=r"build an index with exact search: python -m imgsim index SRC_DIR"):
        col.clusters(3)


@pytest.fixture(scope="module")
def index_above_the_picker_limit(tmp_path_factory):
    """A real index of 2,050 synthetic images (bench/scale.py: same format and code path as `index`, no files)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("picker") / "s"
    done = subprocess.run([sys.executable, "bench/scale.py", "--n", "2050", "--dims", "16", "--out", str(out),
                           "--queries", "5", "--exact-queries", "1", "--add", "0"],
                          cwd=Path(APP).parent, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_the_more_like_these_picker_offers_a_bounded_list_of_matching_names(index_above_the_picker_limit,
                                                                           monkeypatch, tmp_path):
    """Above 2,000 images the picker does not send every name to the browser: it lists the gallery filter's
    matches (at most 2,000, in collection order), and a name chosen from them still searches."""
    serve(monkeypatch, tmp_path, index_above_the_picker_limit)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["q"] = "b000/img_0000005.jpg"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    hint = "2,050 images: type part of a name in the gallery's filter above to list them here."
    assert hint in [c.value for c in at.caption]
    look_like = at.multiselect[0]
    assert look_like.label == "Look like" and look_like.options == []

    at.text_input(key="gallery_filter").set_value("IMG_000010").run()
    assert not at.exception
    wanted = [f"b000/img_{i:07d}.jpg" for i in range(100, 110)]
    assert at.multiselect[0].options == wanted and at.multiselect[1].options == wanted
    assert f"10 image(s) matching “{plain('img_000010')}”" in [c.value for c in at.caption]

    at.text_input(key="gallery_filter").set_value("img_").run()
    assert at.multiselect[0].options == [f"b000/img_{i:07d}.jpg" for i in range(2000)]
    assert f"2,050 image(s) matching “{plain('img_')}”" in [c.value for c in at.caption]

    at.text_input(key="gallery_filter").set_value("img_000010").run()
    at.multiselect[0].select("b000/img_0000104.jpg").run()
    at.multiselect[1].select("b000/img_0000107.jpg").run()
    at.button(key="ml_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.query_params["q"] == "b000/img_0000104.jpg" and at.query_params["not"] == "b000/img_0000107.jpg"
    captions = [c.value for c in at.caption]
    shown = f"more like: {plain('b000/img_0000104.jpg')} · not like: {plain('b000/img_0000107.jpg')}"  # escaped
    assert any(c.startswith(shown) for c in captions), \
        "\n".join(captions)
