"""Shared fixtures: generated image folders, one random-weights model per test session, small indexes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def make_photo(path: Path, seed: int, size: tuple[int, int] = (160, 120), fmt: str | None = None) -> Path:
    """A small synthetic 'photo': a coloured background with a few shapes (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    im = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        x1, y1 = x0 + rng.integers(10, size[0] // 2), y0 + rng.integers(10, size[1] // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)
    return path


@pytest.fixture(scope="session")
def random_extractor():
    """The real ResNet50 with seeded random weights (flatten), built once per session."""
    from imgsim.models.resnet50 import ResNet50Backbone

    return ResNet50Backbone("random", "flatten", batch_size=8)


@pytest.fixture(scope="session")
def extractor_factory(random_extractor):
    """A build_index extractor factory that reuses the session model when the settings match."""
    from imgsim.models.resnet50 import ResNet50Backbone

    cache = {("random", 0, "flatten"): random_extractor}

    def factory(weights, pooling, batch_size):
        key = (weights.mode, weights.seed, pooling)
        if key not in cache:
            cache[key] = ResNet50Backbone(weights, pooling, batch_size)
        return cache[key]

    return factory


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Twelve photos in two sub-folders plus one at the top level, and one broken file."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(5):
        make_photo(root / "reds" / f"r{i}.jpg", seed=i)
    for i in range(6):
        make_photo(root / "blues" / f"b{i}.png", seed=100 + i)
    make_photo(root / "top.jpg", seed=200)
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, photo_dir, extractor_factory) -> Path:
    """An index of ``photo_dir`` built once with random weights; tests must not modify it."""
    from imgsim.build import build_index

    index_dir = tmp_path_factory.mktemp("index") / "photos.imgsim"
    build_index(photo_dir, index_dir, weights="random", model_factory=extractor_factory)
    return index_dir


@pytest.fixture(scope="session")
def random_clip():
    """CLIP ViT-B/32 (keras-hub) with seeded random weights and the run-time vocabulary, built once per session."""
    from imgsim.models.clip import ClipBackbone

    return ClipBackbone(None, "random", batch_size=8)


@pytest.fixture(scope="session")
def clip_index(tmp_path_factory, photo_dir, random_clip) -> Path:
    """A CLIP index of ``photo_dir`` (random weights) built once; tests must not modify it."""
    from imgsim.build import build_index

    index_dir = tmp_path_factory.mktemp("clip") / "photos-clip.imgsim"
    build_index(photo_dir, index_dir, weights="random", backbone="clip", model_factory=lambda w, p, b: random_clip)
    return index_dir


@pytest.fixture
def index_copy(built_index, tmp_path) -> Path:
    """A private copy of the built index that a test may damage."""
    dst = tmp_path / "copy.imgsim"
    shutil.copytree(built_index, dst)
    return dst


def pytest_configure(config):
    # Keras 3.15 + NumPy 2 warn on every weight conversion; the warning is theirs, not ours.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
    config.addinivalue_line("markers", "browser: end-to-end test that drives a real Chromium")


def serve(monkeypatch, tmp_path: Path, index_dir: Path, images: Path | None = None, **env: str) -> None:
    """Point the dashboard at ``index_dir`` (and ``images``, else no image folder setting) with random
    weights, a private preview cache and any extra ``IMGSIM_*`` settings; Streamlit's caches start empty."""
    import streamlit as st

    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    if images is None:
        monkeypatch.delenv("IMGSIM_IMAGES", raising=False)
    else:
        monkeypatch.setenv("IMGSIM_IMAGES", str(images))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(f"IMGSIM_{key}", value)
    st.cache_resource.clear()
    st.cache_data.clear()
