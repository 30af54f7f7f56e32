"""The dashboard on a CLIP index (AppTest): search by describing, the shareable ?text= link, every tab."""

from __future__ import annotations

import pytest
import streamlit as st

import imgsim.models.base
from imgsim.collection import Collection

from .test_app import new_app, results, texts


@pytest.fixture
def clip_env(monkeypatch, clip_index, photo_dir, tmp_path, random_clip):
    builds = []

    def cached_model(spec, weights, pooling=None, batch_size=16, **options):
        builds.append((spec.spec, str(weights), pooling))
        return random_clip

    monkeypatch.setattr(imgsim.models.base, "make_backbone", cached_model)
    monkeypatch.setenv("IMGSIM_INDEX", str(clip_index))
    monkeypatch.setenv("IMGSIM_IMAGES", str(photo_dir))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    col = Collection.open(clip_index)
    col.builds = builds
    return col


def test_typing_a_description_shows_k_results_and_sets_the_url(clip_env, random_clip):
    at = new_app().run()
    assert not at.exception
    assert at.text_input(key="text").label == "Describe what you are looking for"
    at.text_input(key="text").input("a tiger").run()
    assert not at.exception and not at.error
    found = results(at)
    expected = clip_env.neighbors_of_vector(random_clip.embed_text("a tiger").vector, 8)
    assert [d for _, d, _ in found] == [round(n.distance, 3) for n in expected.neighbors]
    assert [r for r, _, _ in found] == list(range(1, 9))
    assert "**Described:**  \n“a tiger”" in texts(at)
    # (the URL itself, ?text=a+tiger, is written by the browser: see tests/test_e2e_clip.py)
    for _ in range(5):
        at.run()
    assert clip_env.builds == [("clip:clip_vit_base_patch32", "random", "projection")]  # built once


def test_a_shared_text_link_restores_the_query_and_picking_an_image_replaces_it(clip_env):
    at = new_app(text="a red car", k="3").run()
    assert not at.exception
    assert at.text_input(key="text").value == "a red car"
    assert len(results(at)) == 3 and "“a red car”" in texts(at)
    row = clip_env.paths.index("reds/r2.jpg")
    at.button(key=f"pick_{row}").click().run()
    assert not at.exception
    assert any(c.value == "query: reds/r2.jpg" for c in at.caption)
    assert at.text_input(key="text").value == ""
    assert results(at)[0][1] == 0.0


def test_long_and_empty_descriptions(clip_env):
    at = new_app().run()
    at.text_input(key="text").input("a tiger on a branch " * 30).run()
    assert any(i.value.startswith("The text is") and "CLIP reads at most 75" in i.value for i in at.info)
    assert len(results(at)) == 8
    at.text_input(key="text").input("   ").run()
    assert not at.exception and results(at) == []
    assert "Describe what you are looking for, pick an image above" in texts(at)


def test_every_tab_works_on_a_clip_index_and_about_names_backbone_and_preset(clip_env):
    for tab, marker in {"Map": "Lasso or box-select points", "Duplicates": "images are in a group",
                        "About this collection": "model clip (preset `clip_vit_base_patch32`)"}.items():
        at = new_app(tab=tab).run()
        assert not at.exception, at.exception
        assert not at.error
        assert marker in texts(at), (tab, texts(at))
    assert any(w.value.startswith("**Random weights.**") for w in at.warning)


def test_no_text_box_on_a_resnet50_index(monkeypatch, built_index, photo_dir, tmp_path):
    monkeypatch.setenv("IMGSIM_INDEX", str(built_index))
    monkeypatch.setenv("IMGSIM_IMAGES", str(photo_dir))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_data.clear()
    at = new_app().run()
    assert not at.exception
    assert not [t for t in at.text_input if t.key == "text"]


def test_update_index_on_a_clip_index_uses_the_cached_model(clip_env, monkeypatch, tmp_path, random_clip):
    import time

    from imgsim.build import build_index
    from imgsim.store.generations import load_index

    from .conftest import make_photo

    src = tmp_path / "src"
    for i in range(3):
        make_photo(src / f"p{i}.jpg", seed=500 + i)
    ix = tmp_path / "ix.imgsim"
    build_index(src, ix, backbone="clip", weights="random", model_factory=lambda w, p, b: random_clip)
    monkeypatch.setenv("IMGSIM_INDEX", str(ix))
    monkeypatch.setenv("IMGSIM_IMAGES", str(src))
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "1")
    at = new_app().run()
    assert not at.exception
    make_photo(src / "p3.jpg", seed=503)
    [b for b in at.button if b.label == "Update index"][0].click().run()
    for _ in range(120):
        if load_index(ix).count == 4:
            break
        time.sleep(0.5)
    assert load_index(ix).count == 4 and load_index(ix).meta["backbone"] == "clip"
    at.run()
    assert not at.exception and not at.error
    assert clip_env.builds == [("clip:clip_vit_base_patch32", "random", "projection")]  # the cached one, once
