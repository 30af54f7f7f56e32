"""An index written before the reshaping (commit c6b858a), and one of format 1 (commit 4906d59), open, answer and
update like one the current code builds.

The fixture ``tests/data/index_c6b858a/`` is written by ``scripts/make_compat_fixture.py``: 12 demo photos, their
index built by the old code (random weights, avg pooling, exact search), and what the old code answered. An
index records the absolute folder it was built from (``meta.json`` ``root``) and each file's mtime; a test copies
the photos and the index into ``tmp_path``, gives the copies their recorded mtimes back (git keeps none) and
points ``root`` at the copy: that is the only change made to the old files, and never in ``tests/data``.
``tests/data/index_4906d59/`` is the same photos written by the same script with ``--commit 4906d59``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imgsim.build import build_index
from imgsim.cli import info_dict
from imgsim.collection import Collection
from imgsim.store.generations import FORMAT_VERSION

FIXTURE = Path(__file__).parent / "data" / "index_c6b858a"
#: The same 12 photos indexed by commit 4906d59, the last to write index format 1 (a JSON manifest, no search record).
FORMAT_1 = Path(__file__).parent / "data" / "index_4906d59"
LISTING = json.loads((FIXTURE / "images.json").read_text(encoding="utf-8"))
OLD_ANSWERS = json.loads((FIXTURE / "old_answers.json").read_text(encoding="utf-8"))
REMOVED = "coins/cad_005nickel.jpg"
#: Fields of ``info`` that say where and when an index was written, not what it holds.
CIRCUMSTANTIAL = ("root", "created", "updated", "generation")


def place(images: list[dict], source: Path, dest: Path) -> None:
    """Copy photos with the size, content and mtime the fixture recorded for them."""
    for image in images:
        target = dest / image["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / image["path"], target)
        os.utime(target, ns=(image["mtime_ns"], image["mtime_ns"]))
        assert target.stat().st_size == image["size"]


def old_index_at(tmp: Path, fixture: Path = FIXTURE) -> tuple[Path, Path]:
    """A copy of the old index and of its photos under ``tmp``, the index pointing at the copied photos."""
    listing = json.loads((fixture / "images.json").read_text(encoding="utf-8"))
    assert [i["sha256"] for i in listing["indexed"]] == [i["sha256"] for i in LISTING["indexed"]]  # the same photos
    photos, index = tmp / "photos", tmp / "old.index"
    place(listing["indexed"], fixture / "photos", photos)
    shutil.copytree(fixture / "index", index)
    meta_file = index / (index / "CURRENT").read_text(encoding="utf-8").strip() / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    assert meta["root"] == listing["root"]
    meta["root"] = os.path.realpath(photos)  # meta.json is not among the files whose sizes the index checks
    meta_file.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return photos, index


def fresh_build(photos: Path, index: Path, extractor_factory) -> Collection:
    """The same photos indexed by the current code with the fixture's settings."""
    build_index(photos, index, weights="random", pooling="avg", search="exact", model_factory=extractor_factory)
    return Collection.open(index)


def facts(col: Collection) -> dict:
    return {k: v for k, v in info_dict(col).items() if k not in CIRCUMSTANTIAL}


def loose(value):
    """``value`` with every float compared to 1e-6: float32 sums differ that much between forward-pass runtimes."""
    if isinstance(value, dict):
        return {k: loose(v) for k, v in value.items()}
    if isinstance(value, list):
        return [loose(v) for v in value]
    return pytest.approx(value, rel=0, abs=1e-6) if isinstance(value, float) else value


def answers(col: Collection, photos: Path) -> dict[str, list[tuple[str, float]]]:
    """Every image's neighbours, the whole collection deep, queried by its file as the CLI does."""
    return {p: [(n.path, n.distance) for n in col.query_file(photos / p, k=col.count).neighbors] for p in col.paths}


def assert_same_answers(got: dict, expected: dict, what: str) -> None:
    assert list(got) == list(expected)
    for query in expected:
        assert [p for p, _ in got[query]] == [p for p, _ in expected[query]], f"{what}: neighbours of {query}"
        np.testing.assert_allclose([d for _, d in got[query]], [d for _, d in expected[query]], rtol=0, atol=1e-6,
                                   err_msg=f"{what}: distances from {query}")


def assert_same_index(got: Collection, expected: Collection) -> None:
    """Same rows, vectors, stored neighbour graph and previews: what the dashboard reads without a query."""
    assert got.paths == expected.paths
    np.testing.assert_allclose(got.index.vectors, expected.index.vectors, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.index.array("nn_indices"), expected.index.array("nn_indices"))
    np.testing.assert_allclose(got.index.array("nn_distances"), expected.index.array("nn_distances"), rtol=0, atol=1e-6)
    assert [got.preview(r) for r in range(got.count)] == [expected.preview(r) for r in range(expected.count)]
    assert all(got.preview(r) for r in range(got.count))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, extractor_factory) -> tuple[Path, Collection]:
    """The fixture's 12 photos indexed by the current code (built once for this module)."""
    tmp = tmp_path_factory.mktemp("fresh")
    place(LISTING["indexed"], FIXTURE / "photos", tmp / "photos")
    return tmp / "photos", fresh_build(tmp / "photos", tmp / "fresh.index", extractor_factory)


def test_fixture_is_an_old_index_of_the_listed_photos():
    meta = json.loads((FIXTURE / "index" / "gen-000001" / "meta.json").read_text(encoding="utf-8"))
    manifest = json.loads((FIXTURE / "index" / "gen-000001" / "manifest.json").read_text(encoding="utf-8"))
    assert (FIXTURE / "index" / "CURRENT").read_text(encoding="utf-8").strip() == "gen-000001"
    assert (meta["version"], meta["count"], meta["dims"], meta["pooling"]) == (2, 12, 2048, "avg")
    assert [{k: e[k] for k in ("path", "size", "mtime_ns", "sha256")} for e in manifest] == [
        {k: e[k] for k in ("path", "size", "mtime_ns", "sha256")} for e in LISTING["indexed"]]
    total = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert total < 2 * 2**20, f"the fixture has grown to {total:,} bytes"


def test_old_index_opens_with_the_facts_the_old_code_reported(tmp_path, fresh):
    _, index = old_index_at(tmp_path)
    col = Collection.open(index)
    old_info = {k: v for k, v in OLD_ANSWERS["info"].items() if k not in CIRCUMSTANTIAL}
    assert facts(col) == old_info  # the same code path read the same file: exactly equal
    assert facts(col) == loose(facts(fresh[1]))
    assert facts(col)["search"] == {"method": "exact", "chosen": "asked", "recall_at_10": 1.0}
    assert (col.count, col.is_random, col.backbone.spec) == (12, True, "resnet50")


def test_a_format_1_index_opens_with_the_facts_of_a_fresh_build(tmp_path, fresh):
    _, index = old_index_at(tmp_path, FORMAT_1)
    col = Collection.open(index)
    assert col.index.meta["version"] == 1 and "search" not in col.index.meta
    assert not (index / col.index.generation / "paths.txt").exists()  # format 1: the manifest is one JSON list
    # What differs from a format-2 index is only what format 1 did not record.
    expected = dict(facts(fresh[1]), version=1, search={"method": "exact", "chosen": "auto", "recall_at_10": 1.0})
    assert facts(col) == loose(expected)


@pytest.mark.parametrize("fixture", [FIXTURE, FORMAT_1], ids=["c6b858a", "format-1"])
def test_old_index_answers_like_a_fresh_build_and_like_the_old_code(tmp_path, fresh, fixture):
    photos, index = old_index_at(tmp_path, fixture)
    col = Collection.open(index)
    fresh_photos, fresh_col = fresh
    got = answers(col, photos)
    assert_same_answers(got, answers(fresh_col, fresh_photos), "old index vs fresh build")
    old_answers = json.loads((fixture / "old_answers.json").read_text(encoding="utf-8"))
    old = {q: [(n["path"], n["distance"]) for n in found] for q, found in old_answers["queries"].items()}
    assert_same_answers(got, old, "current code vs old code on the old index")  # the old code printed 6 decimals
    assert all(found[0] == (query, 0.0) for query, found in got.items())
    assert_same_index(col, fresh_col)
    assert [g.rows for g in col.duplicate_groups(0.06)] == [g.rows for g in fresh_col.duplicate_groups(0.06)]


@pytest.mark.parametrize("fixture", [FIXTURE, FORMAT_1], ids=["c6b858a", "format-1"])
def test_old_index_updates_like_a_fresh_build(tmp_path, extractor_factory, fixture):
    photos, index = old_index_at(tmp_path, fixture)
    place(LISTING["extra"], FIXTURE / "extra", photos)
    (photos / REMOVED).unlink()

    # No settings given: an update takes weights, pooling and search from the old index itself.
    report = build_index(photos, index, model_factory=extractor_factory)
    assert (report.added, report.removed, report.unchanged, report.extracted, report.committed) == (2, 1, 11, 2, True)
    updated = Collection.open(index)
    assert updated.index.generation == "gen-000002" and updated.index.meta["version"] == FORMAT_VERSION

    tmp_fresh = tmp_path / "fresh"
    place([i for i in LISTING["indexed"] if i["path"] != REMOVED], FIXTURE / "photos", tmp_fresh)
    place(LISTING["extra"], FIXTURE / "extra", tmp_fresh)
    fresh = fresh_build(tmp_fresh, tmp_path / "fresh.index", extractor_factory)
    assert updated.count == 13 and REMOVED not in updated.paths
    expected = facts(fresh)
    if fixture == FORMAT_1:  # format 1 recorded no search choice: exact was the default, not asked for
        expected["search"] = dict(expected["search"], chosen="auto")
    assert facts(updated) == loose(expected)
    assert_same_index(updated, fresh)
    assert_same_answers(answers(updated, photos), answers(fresh, tmp_fresh), "updated old index vs fresh build")
