"""More like these (Rocchio): one positive is the plain query; negatives push images down."""

from __future__ import annotations

import numpy as np
import pytest

from imgsim.collection import Collection
from imgsim.errors import ImgsimError
from imgsim.analysis.recommend import rocchio


def test_rocchio_formula():
    a, b, c = np.eye(3)
    assert np.allclose(rocchio(a[None]), a)
    expected = (a + b) / np.sqrt(2) - 0.5 * c
    assert np.allclose(rocchio(np.stack([a, b]), c[None], weight=0.5), expected / np.linalg.norm(expected))
    with pytest.raises(ImgsimError, match="at least one positive"):
        rocchio(np.zeros((0, 3)))


def test_one_positive_equals_the_plain_query(built_index):
    col = Collection.open(built_index)
    row = col.paths.index("reds/r1.jpg")
    plain = col.neighbors_of_row(row, 6)
    more = col.query_examples([(row, None)], [], 6)
    assert [n.row for n in more.neighbors] == [n.row for n in plain.neighbors]
    assert [n.distance for n in more.neighbors] == [n.distance for n in plain.neighbors]
    # the same vector through the Rocchio formula gives the same neighbours, itself first
    via_vector = col.neighbors_of_vector(rocchio(np.asarray(col.index.vectors[row])[None]), 6)
    assert [n.row for n in via_vector.neighbors] == [n.row for n in plain.neighbors]


def test_negatives_push_a_known_image_down(built_index):
    col = Collection.open(built_index)
    row = col.paths.index("blues/b2.png")
    plain = col.neighbors_of_row(row, col.count)
    nearest = plain.neighbors[1].row
    pushed = col.query_examples([(row, None)], [(nearest, None)], col.count)
    ranks = {n.row: n.rank for n in pushed.neighbors}
    assert ranks[nearest] > 2
    assert ranks[nearest] == col.count  # what the negative looks like is what the query now avoids most


def test_several_positives_rank_both_near_the_top(built_index):
    col = Collection.open(built_index)
    a, b = col.paths.index("reds/r0.jpg"), col.paths.index("blues/b0.png")
    result = col.query_examples([(a, None), (b, None)], [], col.count)
    assert result.row is None
    # The query is the unit mean of the two: equally near both, and ranked like a brute-force scan says.
    stored = np.asarray(col.index.vectors, dtype=np.float64)
    mean = (stored[a] + stored[b]) / np.linalg.norm(stored[a] + stored[b])
    reference = np.linalg.norm(stored - mean, axis=1)
    assert [n.distance for n in result.neighbors] == pytest.approx(np.sort(reference), abs=1e-5)
    assert [n.distance for n in result.neighbors] == pytest.approx(reference[[n.row for n in result.neighbors]],
                                                                   abs=1e-5)
    ranks = {n.row: n.rank for n in result.neighbors}
    assert ranks[a] <= 2 and ranks[b] <= 2, ranks
    assert reference[a] == pytest.approx(reference[b], abs=1e-6)
