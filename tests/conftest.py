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


def reference_map(model, path) -> np.ndarray:
    """The notebook's per-image path, verbatim, up to the model's output: ``load_img`` squashed to 224x224,
    caffe preprocessing, ``model.predict`` (the Keras model, not our runtime): the 7x7x2048 feature map."""
    import keras
    from keras.applications.resnet50 import preprocess_input

    img = keras.utils.load_img(path, target_size=(224, 224))
    x = keras.utils.img_to_array(img)
    x = np.expand_dims(x, axis=0)
    x = preprocess_input(x)
    return model.predict(x, verbose=0)[0]


def reference_vector(model, path) -> np.ndarray:
    """The notebook's per-image vector: :func:`reference_map` flattened and divided by its L2 norm."""
    feat = reference_map(model, path).flatten()
    return feat / np.linalg.norm(feat)


def reference_distances(model, col, path: Path) -> dict[str, float]:
    """Distance from the file ``path``, embedded through :func:`reference_vector`, to every image of the
    Collection ``col`` (scikit-learn's brute-force Euclidean k-NN over the stored vectors), by relative path."""
    from sklearn.neighbors import NearestNeighbors

    stored = np.asarray(col.index.vectors, dtype=np.float32)
    query = reference_vector(model, path)[None]
    knn = NearestNeighbors(n_neighbors=len(stored), algorithm="brute", metric="euclidean").fit(stored)
    dist, rows = knn.kneighbors(query)
    return {col.paths[int(r)]: float(d) for r, d in zip(rows[0], dist[0])}


def assert_reference_neighbors(found: list[tuple[str, float]], reference: dict[str, float], tol: float = 1e-5) -> None:
    """``found`` (path, distance), nearest first, are the reference's nearest: each path at its reference
    distance and the distances the reference's smallest (so images tied within ``tol`` may swap places)."""
    assert found, "no results"
    nearest = sorted(reference.values())[: len(found)]
    assert [d for _, d in found] == pytest.approx(nearest, abs=tol)
    assert [d for _, d in found] == pytest.approx([reference[p] for p, _ in found], abs=tol), found
