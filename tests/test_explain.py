"""Why similar: flatten cells sum to the cosine; avg best-match cells from maps computed again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsim.collection import Collection
from imgsim.errors import ImgsimError
from imgsim.analysis.explain import explain_flatten, explain_maps, heat_overlay, matched_cells
from imgsim.models.embedding import normalize
from imgsim.models.resnet50 import pool
from imgsim.models.weights import Weights

from .conftest import make_photo, reference_map


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


#: The changed region of :func:`corner_pair`: the top-right 32x32 pixels of a 224x224 image, grid cell (0, 6).
CHANGED = (0, 6)


def corner_pair(folder) -> tuple[Path, Path]:
    """A 224x224 PNG (one grid cell = 32x32 pixels, no resize) and a copy with only its top-right cell inverted."""
    a = make_photo(folder / "a.png", seed=5, size=(224, 224))
    pixels = np.asarray(Image.open(a).convert("RGB")).copy()
    pixels[:32, 192:] = 255 - pixels[:32, 192:]
    b = folder / "b.png"
    Image.fromarray(pixels).save(b)
    return a, b


def far_from_changed(grid: np.ndarray) -> np.ndarray:
    """The values of the cells 4 or more cells away from :data:`CHANGED` (beyond what the change reaches)."""
    i, j = np.indices((7, 7))
    return grid[np.maximum(abs(i - CHANGED[0]), abs(j - CHANGED[1])) >= 4]


def test_flatten_cell_i_j_is_image_region_i_j(built_index, random_extractor, tmp_path):
    col = Collection.open(built_index)
    a, b = (p.read_bytes() for p in corner_pair(tmp_path))
    explain = [[col.explain(x, y, extractor=lambda: random_extractor).cells for y in (a, b)] for x in (a, b)]
    # Each cell's own cosine (its part of a.b over its part of |a| and |b|): 1 where the images agree.
    cell_cosine = explain[0][1] / np.sqrt(explain[0][0] * explain[1][1])
    assert np.unravel_index(cell_cosine.argmin(), (7, 7)) == CHANGED
    assert cell_cosine[CHANGED] < 0.95
    assert far_from_changed(cell_cosine) == pytest.approx(1.0, abs=1e-4)


def test_avg_explanation_uses_the_two_images_own_maps(tmp_path, extractor_factory, random_extractor):
    from imgsim.build import build_index

    a, b = corner_pair(tmp_path / "src")
    build_index(tmp_path / "src", tmp_path / "avg.imgsim", weights="random", pooling="avg",
                model_factory=extractor_factory)
    col = Collection.open(tmp_path / "avg.imgsim")
    e = col.explain(col.paths.index("a.png"), col.paths.index("b.png"),
                    extractor=lambda: extractor_factory(Weights.parse("random"), "avg", 8))
    # The expected explanation from the notebook path's maps of a and b, cell against cell on the 7x7 grid.
    unit = [m / np.linalg.norm(m, axis=-1, keepdims=True) for m in (reference_map(random_extractor.model, p)
                                                                   for p in (a, b))]
    cosine = np.einsum("ijc,klc->ijkl", unit[0], unit[1]).reshape(7, 7, 49)
    assert e.cells == pytest.approx(cosine.max(axis=-1), abs=1e-4)
    assert np.unravel_index(e.cells.argmin(), (7, 7)) == CHANGED and e.cells[CHANGED] < 0.99
    assert far_from_changed(e.cells) == pytest.approx(1.0, abs=1e-4)
    # An unchanged cell's best match is itself.
    i, j = np.indices((7, 7))
    assert (far_from_changed(e.best_match[..., 0]) == far_from_changed(i)).all()
    assert (far_from_changed(e.best_match[..., 1]) == far_from_changed(j)).all()


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
