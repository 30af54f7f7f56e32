"""Why similar: flatten cells sum to the cosine; avg best-match cells from maps computed again."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgsim.collection import Collection
from imgsim.errors import ImgsimError
from imgsim.analysis.explain import explain_flatten, explain_maps, heat_overlay, matched_cells
from imgsim.models.embedding import normalize
from imgsim.models.resnet50 import pool
from imgsim.models.weights import Weights

from .conftest import make_photo


def test_flatten_cells_sum_to_the_cosine(built_index):
    col = Collection.open(built_index)
    a, b = col.paths.index("reds/r0.jpg"), col.paths.index("blues/b3.png")
    e = col.explain(a, b)
    assert e.mode == "flatten" and e.cells.shape == (7, 7)
    assert abs(float(e.cells.sum()) - e.cosine) < 1e-5
    found = col.neighbors_of_row(a, col.count)
    cos = next(n.similarity for n in found.neighbors if n.row == b)
    assert e.cosine == pytest.approx(cos, abs=1e-5)
    assert 0 < e.top_share(5) <= 1 and e.top_share(49) == pytest.approx(1.0)
    assert "carry" in e.describe()


def test_identical_images_give_all_positive_cells(built_index):
    col = Collection.open(built_index)
    row = col.paths.index("blues/b1.png")
    e = col.explain(row, row)
    assert np.all(e.cells > 0)
    assert e.cosine == pytest.approx(1.0, abs=1e-5) and float(e.cells.sum()) == pytest.approx(1.0, abs=1e-5)


def test_uploaded_bytes_are_explained_with_the_model(built_index, random_extractor, tmp_path):
    col = Collection.open(built_index)
    data = make_photo(tmp_path / "new.jpg", seed=999).read_bytes()
    e = col.explain(data, 0, extractor=lambda: random_extractor)
    assert abs(float(e.cells.sum()) - e.cosine) < 1e-5


def test_wrong_shapes_are_refused():
    with pytest.raises(ImgsimError, match="7x7x2048 flatten vectors"):
        explain_flatten(np.ones(2048), np.ones(2048))


def test_best_match_finds_a_moved_cell():
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(7, 7, 16)))
    b = np.roll(a, 2, axis=1)  # the same content, two cells to the right
    e = explain_maps(a, b, cosine=0.5)
    assert e.mode == "avg" and e.cosine == 0.5
    assert np.allclose(e.cells, 1.0)
    assert all(tuple(e.best_match[i, j]) == (i, (j + 2) % 7) for i in range(7) for j in range(7))
    assert matched_cells(e).shape == (7, 7)


def test_avg_index_explanation_computes_maps_that_pool_to_the_stored_vectors(tmp_path, extractor_factory):
    from imgsim.build import build_index

    for i in range(4):
        make_photo(tmp_path / "src" / f"p{i}.jpg", seed=500 + i)
    build_index(tmp_path / "src", tmp_path / "avg.imgsim", weights="random", pooling="avg",
                model_factory=extractor_factory)
    col = Collection.open(tmp_path / "avg.imgsim")
    model = extractor_factory(Weights.parse("random"), "avg", 8)
    calls = []

    def lazy():
        calls.append(1)
        return model

    e = col.explain(0, 1, extractor=lazy)
    assert calls == [1], "avg mode needs the model"
    assert e.mode == "avg" and e.cells.shape == (7, 7) and e.best_match.shape == (7, 7, 2)
    assert np.all(e.cells <= 1 + 1e-9)
    # faithfulness: the maps the explanation used pool to the very vectors stored in the index
    from imgsim import decode

    maps = model.feature_maps(np.stack([decode.model_input(decode.read_bytes(col.image_path(r))) for r in (0, 1)]))
    assert np.abs(normalize(pool(maps, "avg")) - np.asarray(col.index.vectors[:2])).max() < 1e-4
    same = col.explain(2, 2, extractor=lazy)
    assert np.allclose(same.cells, 1.0)


def test_heat_overlay_keeps_the_size_and_reddens_the_strongest_cell():
    im = Image.new("RGB", (224, 224), (128, 128, 128))
    cells = np.zeros((7, 7))
    cells[3, 4] = 1.0
    out = heat_overlay(im, cells)
    assert out.size == (224, 224)
    hot = out.getpixel((4 * 32 + 16, 3 * 32 + 16))
    cold = out.getpixel((16, 16))
    assert hot[0] > 150 and hot[1] < 100 and cold == (128, 128, 128)
