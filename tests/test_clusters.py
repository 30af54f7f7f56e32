"""Clusters: k-means on PCA projections recovers known groups; organising never touches the originals."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from imgsim.analysis.clusters import ClusterModel, UnsafeOutput, check_output, cluster_folder, organise, suggest_k
from imgsim.collection import Collection


def blobs(groups: int = 5, per: int = 60, dims: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (groups, dims))
    truth = np.repeat(np.arange(groups), per)
    x = centres[truth] + rng.normal(0, 0.15, (len(truth), dims))
    order = rng.permutation(len(truth))
    return x[order].astype(np.float32), truth[order]


@pytest.mark.parametrize("minibatch_above", [10_000, 50])
def test_known_groups_are_recovered(minibatch_above):
    x, truth = blobs()
    model = ClusterModel(5, minibatch_above=minibatch_above).fit(x)
    assert adjusted_rand_score(truth, model.labels_) >= 0.9
    assert model.method_ == ("kmeans" if minibatch_above > len(x) else "minibatch-kmeans")
    assert model.sizes_.sum() == len(x) and list(model.sizes_) == sorted(model.sizes_, reverse=True)
    # members are sorted by distance to their centre; central() is their head
    for c in range(model.k_):
        rows = model.members(c)
        assert np.all(np.diff(model.distances_[rows]) >= 0)
        assert list(model.central(c, 3)) == list(rows[:3])


def test_suggested_k_finds_the_number_of_groups():
    x, _ = blobs(groups=4, per=40)
    suggested = suggest_k(x, k_max=8)
    assert suggested.k == 4
    assert set(suggested.scores) == set(range(2, 9))


def test_impossible_k_is_clamped_and_reported():
    x, _ = blobs(groups=2, per=3)
    model = ClusterModel(50).fit(x)
    assert model.k_ == 6 and model.sizes_.sum() == 6
    assert ClusterModel(3).fit(np.zeros((0, 4))).k_ == 0


def test_collection_clusters_cover_every_image(built_index):
    col = Collection.open(built_index)
    model = col.clusters(3)
    assert model.k_ == 3 and int(model.sizes_.sum()) == col.count
    assert sorted(np.concatenate([model.members(c) for c in range(3)]).tolist()) == list(range(col.count))


def test_out_inside_the_source_or_not_empty_is_refused(tmp_path):
    src = tmp_path / "photos"
    (src / "a").mkdir(parents=True)
    with pytest.raises(UnsafeOutput, match=re.escape(
            f"Refusing --out {src / 'albums'}: it is inside the image folder {src}. "
            "Choose a folder outside it, so the originals are never touched.")):
        check_output(src / "albums", src)
    with pytest.raises(UnsafeOutput, match="it is inside the image folder"):
        check_output(src, src)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    with pytest.raises(UnsafeOutput, match=re.escape(
            f"Refusing --out {full}: it is not an empty folder. Choose a new or empty folder.")):
        check_output(full, src)
    assert check_output(tmp_path / "new", src) == tmp_path / "new"


def test_symlinks_point_at_the_originals_and_copies_leave_them_untouched(built_index, photo_dir, tmp_path):
    col = Collection.open(built_index)
    model = col.clusters(2)
    before = {p: (os.stat(photo_dir / p).st_mtime_ns, (photo_dir / p).read_bytes()) for p in col.paths}
    report = organise(col.paths, model.labels_, model.k_, photo_dir, tmp_path / "albums", "link")
    assert report.files == col.count and report.folders == ["cluster-1", "cluster-2"]
    for row, rel in enumerate(col.paths):
        link = tmp_path / "albums" / cluster_folder(int(model.labels_[row]), 2) / rel.replace("/", "__")
        assert link.is_symlink()
        assert os.readlink(link) == str(photo_dir.resolve() / rel)
        assert os.path.samefile(link, photo_dir / rel)
    organise(col.paths, model.labels_, model.k_, photo_dir, tmp_path / "copies", "copy")
    copied = sorted(p for p in (tmp_path / "copies").rglob("*") if p.is_file())
    assert len(copied) == col.count and not any(p.is_symlink() for p in copied)
    after = {p: (os.stat(photo_dir / p).st_mtime_ns, (photo_dir / p).read_bytes()) for p in col.paths}
    assert after == before
    with pytest.raises(UnsafeOutput, match="not an empty folder"):
        organise(col.paths, model.labels_, model.k_, photo_dir, tmp_path / "albums", "link")


def test_flattened_names_that_clash_get_distinct_files(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b.jpg").write_bytes(b"one")
    (src / "a__b.jpg").write_bytes(b"two")
    report = organise(["a/b.jpg", "a__b.jpg"], np.array([0, 0]), 1, src, tmp_path / "out", "copy")
    assert report.files == 2
    made = sorted(p.name for p in (tmp_path / "out" / "cluster-1").iterdir())
    assert made == ["a__b (2).jpg", "a__b.jpg"]
    assert sorted((tmp_path / "out" / "cluster-1" / n).read_bytes() for n in made) == [b"one", b"two"]
