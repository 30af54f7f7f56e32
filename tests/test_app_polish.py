"""Dashboard polish (issue 20, items 10-11, and the dashboard review): state that survives a re-index, bounded
and index-local caches, link values checked before costly work, the Duplicates tab's fragment."""

from __future__ import annotations

import shutil

import pytest
import streamlit as st

import imgsim.models.base
from dashboard import state
from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.serving.policy import plain

from .conftest import make_photo
from .test_app import app_env, new_app, results, texts  # noqa: F401  (app_env is a fixture)
from .test_app_metadata import col, meta_index  # noqa: F401  (fixtures)


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


def test_every_cache_with_arguments_is_bounded():
    """The arguments of the dashboard's caches come from visitors (folders, ?t=, ?ck=): unbounded, they grow."""
    import inspect

    from dashboard import cached
    from streamlit.runtime.caching.cache_utils import CachedFunc

    wrappers = {name: f for name, f in vars(cached).items() if isinstance(f, CachedFunc)}
    assert {"open_collection", "load_model", "_duplicate_scan", "cluster_map_json", "map_base_json"} <= set(wrappers)
    unbounded = [name for name, f in wrappers.items()
                 if inspect.signature(f._info.func).parameters and f._info.max_entries is None]
    assert unbounded == []


def test_an_index_changed_under_the_server_reloads_only_its_own_cached_answers(tmp_path, photo_dir, built_index,
                                                                               monkeypatch):
    """Files of one index changing under the server once cleared every cache of every session (all indexes)."""
    import os

    from dashboard import cached

    st.cache_resource.clear()
    st.cache_data.clear()
    a, b = tmp_path / "a.imgsim", tmp_path / "b.imgsim"
    shutil.copytree(built_index, a)
    shutil.copytree(built_index, b)
    computed = []
    real = Collection.duplicate_scan
    monkeypatch.setattr(Collection, "duplicate_scan",
                        lambda self, t, where=None, cap=None: computed.append(self.index.directory.name) or real(self, t, where, cap))

    def groups(index_dir):
        return cached.duplicate_scan(str(index_dir), cached.generation_of(index_dir), 0.5).groups

    cached.current_collection(a), cached.current_collection(b)
    first_a, first_b = groups(a), groups(b)
    assert computed == ["a.imgsim", "b.imgsim"]
    old = cached.generation_of(a)
    vectors = next((a / old).glob("*.npy"))
    os.utime(vectors, ns=(vectors.stat().st_atime_ns, vectors.stat().st_mtime_ns + 10**9))  # "changed on disk"
    reloaded = cached.current_collection(a)
    assert reloaded.index.changed_on_disk() == [] and cached.generation_of(a) == f"{old}~1"
    assert cached.current_collection(a) is reloaded and cached.generation_of(a) == f"{old}~1"  # once
    assert groups(a) == first_a and groups(b) == first_b
    assert computed == ["a.imgsim", "b.imgsim", "a.imgsim"]  # b's answer was kept; a's computed again
    assert cached.generation_of(b) == old


def test_a_links_threshold_is_computed_at_the_sliders_step(built_index, monkeypatch):
    """?t=0.40001, 0.40002, … each computed the duplicate groups anew (a link can vary it on every visit)."""
    from dashboard import cached

    st.cache_data.clear()
    asked = []
    real = Collection.duplicate_scan
    monkeypatch.setattr(Collection, "duplicate_scan", lambda self, t, where=None, cap=None: asked.append(t) or real(self, t, where, cap))
    generation = cached.generation_of(built_index)
    answers = [cached.duplicate_scan(str(built_index), generation, t) for t in (0.4, 0.40001, 0.40449, 0.3999)]
    assert asked == [0.4] and all(a == answers[0] for a in answers)
    assert cached.duplicate_scan(str(built_index), generation, 0.406) == real(Collection.open(built_index), 0.41)
    assert asked == [0.4, 0.41]


def test_a_threshold_that_links_too_many_pairs_says_its_groups_are_incomplete(app_env, monkeypatch):
    """?t=1 on an exact index linked nearly every pair (n²/2 of them, gigabytes at 50k images): the page's scan
    now stops at the cap, as the API's does, and says its groups are incomplete."""
    from imgsim.analysis import duplicates

    monkeypatch.setattr(duplicates, "MAX_PAIRS", 3)
    at = new_app(tab="Duplicates", t="1.0").run()
    assert not at.exception
    capped = duplicates.duplicate_scan(app_env.search, 1.0, 3)
    assert capped.truncated and capped.pairs == 3
    assert [w.value for w in at.warning if "Random weights" not in w.value] == [
        "More than 3 pairs of images are within 1: the scan stopped there, so these groups (from the first 3 "
        "pairs, in index order) are incomplete. A lower threshold finds the near-duplicates."]
    assert at.metric[0].value == str(len(capped.groups))
    monkeypatch.setattr(duplicates, "MAX_PAIRS", 10**9)
    st.cache_data.clear()
    whole = new_app(tab="Duplicates", t="1.0").run()
    assert not [w for w in whole.warning if "pairs" in w.value] and whole.metric[0].value == str(len(app_env.duplicate_groups(1.0)))


def test_a_date_past_year_9999_in_a_link_gets_the_filters_message(col):
    """`?where=taken = 9999`: the period's end overflowed outside the parser's check, and the error boundary
    replaced the whole page (no filter bar, no way to clear the filter)."""
    at = new_app(where="taken = 9999").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The filter cannot be used, so every image is shown: " + plain(
        "taken is a date: '9999' is too late (the last period a filter can name ends 9999-12-31T23:59)", 2000)]
    assert len(results(at)) == 8


def test_a_description_is_embedded_once_however_often_the_page_reruns(monkeypatch, clip_index, photo_dir, tmp_path,
                                                                      random_clip):
    """The fused search called the text encoder itself, so every rerun (k, the filter, a Similar click) ran
    CLIP's text tower again; the page's answer is still the library's for the same text."""
    from .conftest import serve

    serve(monkeypatch, tmp_path, clip_index, photo_dir)
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **kw: random_clip)
    texts_embedded = []
    real = type(random_clip).embed_text
    monkeypatch.setattr(type(random_clip), "embed_text", lambda self, t: texts_embedded.append(t) or real(self, t))
    at = new_app().run()
    at.text_input(key="text").input("a red car").run()
    for k in (5, 7, 8):
        at.slider(key="k").set_value(k).run()
    assert not at.exception and texts_embedded == ["a red car"]
    expected = Collection.open(clip_index).neighbors_of_vector(real(random_clip, "a red car").vector, 8)
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in expected.neighbors]


def test_the_largest_distance_slider_leaves_out_exactly_the_farther_results(app_env):
    """Results farther than the slider's value are left out (and said so); the rest are the k nearest as before."""
    at = new_app(q="reds/r0.jpg").run()
    whole = app_env.neighbors_of_row(app_env.paths.index("reds/r0.jpg"), 8).neighbors
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in whole]
    cut = round((whole[3].distance + whole[4].distance) / 2, 2)  # between the 4th and 5th nearest
    at.slider(key=state.MAX_DISTANCE).set_value(cut).run()
    kept = [n for n in whole if n.distance <= cut]
    assert not at.exception and 0 < len(kept) < 8
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in kept]
    assert any(c.value == f"Results farther than {cut:.2f} are left out: {8 - len(kept)} of 8." for c in at.caption)
