"""Dashboard polish (issue 20, items 10-11, and the dashboard review): state that survives a re-index, bounded
and index-local caches, link values checked before costly work, the Duplicates tab's fragment."""

from __future__ import annotations

import shutil

import pytest
import streamlit as st

import imgsim.models.base
from imgsim.build import build_index
from imgsim.collection import Collection

from .conftest import make_photo
from .test_app import new_app, results, texts


@pytest.fixture
def own_clip_env(monkeypatch, photo_dir, clip_index, tmp_path, random_clip):
    """A copy of the CLIP index and its folder that a test may re-index (the model: the session's random CLIP)."""
    folder, index_dir = tmp_path / "photos", tmp_path / "photos-clip.imgsim"
    shutil.copytree(photo_dir, folder)
    build_index(folder, index_dir, weights="random", backbone="clip", model_factory=lambda w, p, b: random_clip)
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **kw: random_clip)
    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    monkeypatch.setenv("IMGSIM_IMAGES", str(folder))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    return folder, index_dir


def test_a_description_outlives_a_re_index_that_renumbers_its_image_query(own_clip_env, random_clip):
    """The image a description replaced was kept as a row: a re-index that moved that image to another row read
    as "another image was picked" and cleared the description."""
    folder, index_dir = own_clip_env
    at = new_app(q="blues/b3.png").run()
    at.text_input(key="text").input("a red car").run()
    assert not at.exception and "“a red car”" in texts(at)
    make_photo(folder / "aaa.jpg", seed=300)  # sorts first: every indexed image moves one row on
    build_index(folder, index_dir, weights="random", backbone="clip", model_factory=lambda w, p, b: random_clip)
    col = Collection.open(index_dir)
    assert col.paths[0] == "aaa.jpg"
    at.session_state["tab"] = "Map"  # the map derives the image query's row in the new generation
    at.run()
    at.session_state["tab"] = "Search"
    at.run()
    assert not at.exception
    assert at.text_input(key="text").value == "a red car" and "“a red car”" in texts(at)
    expected = col.neighbors_of_vector(random_clip.embed_text("a red car").vector, 8)
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in expected.neighbors]
