"""The on-disk format: round trip, atomic replace, version check, damage detection."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from imgsim.store import generations as store
from imgsim.errors import SkipReason, Skipped
from imgsim.store.generations import IndexCorruptError, IndexNotFound, IndexVersionError, load_index


def write_small(directory, rows=3, dims=4, value=1.0, marker="a"):
    writer = store.GenerationWriter(directory, rows, dims)
    writer.vectors[:] = value
    writer.save_array("extra", np.arange(rows))
    entries = [store.Entry(f"{marker}{i}.jpg", 10 + i, 1000 + i, f"{i:064x}") for i in range(rows)]
    skipped = [Skipped("bad.jpg", SkipReason.CORRUPT, "truncated", 5, 6)]
    meta = {"backbone": "resnet50", "pooling": "avg", "root": "/photos", "created": "c", "updated": "u",
            "weights": {"mode": "random", "identity": "random:0", "label": "random", "path": None, "seed": 0}}
    return writer.commit(meta, entries, skipped)


def test_round_trip(tmp_path):
    gen = write_small(tmp_path / "ix")
    ix = load_index(tmp_path / "ix")
    assert gen == ix.generation == "gen-000001"
    assert ix.count == 3 and ix.dims == 4 and ix.pooling == "avg" and ix.is_random
    assert ix.paths == ["a0.jpg", "a1.jpg", "a2.jpg"]
    assert ix.row_of("a2.jpg") == 2 and ix.row_with_hash(f"{1:064x}") == 1
    assert ix.skipped == [Skipped("bad.jpg", SkipReason.CORRUPT, "truncated", 5, 6)]
    assert isinstance(ix.vectors, np.memmap) and ix.vectors.shape == (3, 4)
    np.testing.assert_array_equal(ix.array("extra"), [0, 1, 2])
    assert ix.meta["version"] == store.FORMAT_VERSION


def test_second_write_replaces_and_removes_old_generation(tmp_path):
    write_small(tmp_path / "ix")
    write_small(tmp_path / "ix", rows=2, marker="b")
    ix = load_index(tmp_path / "ix")
    assert ix.generation == "gen-000002" and ix.paths == ["b0.jpg", "b1.jpg"]
    assert sorted(p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith("gen-")) == ["gen-000002"]


def test_crash_before_the_switch_leaves_previous_index_intact(tmp_path, monkeypatch):
    write_small(tmp_path / "ix", value=1.0)
    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith(store.CURRENT):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_small(tmp_path / "ix", rows=5, value=2.0, marker="z")
    monkeypatch.undo()
    ix = load_index(tmp_path / "ix")
    assert ix.generation == "gen-000001" and ix.paths == ["a0.jpg", "a1.jpg", "a2.jpg"]
    np.testing.assert_array_equal(ix.vectors, 1.0)
    # The next successful write cleans up the unfinished generation.
    write_small(tmp_path / "ix", rows=1, marker="n")
    names = sorted(p.name for p in (tmp_path / "ix").iterdir() if not p.name.startswith("."))
    assert names == [store.CURRENT, "gen-000003"]


def test_crash_while_writing_vectors_leaves_previous_index_intact(tmp_path):
    write_small(tmp_path / "ix")
    writer = store.GenerationWriter(tmp_path / "ix", 10, 4)
    writer.vectors[:5] = 3.0  # killed here: no commit
    ix = load_index(tmp_path / "ix")
    assert ix.count == 3


def test_newer_version_is_refused_clearly(tmp_path):
    write_small(tmp_path / "ix")
    meta_path = tmp_path / "ix" / "gen-000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = store.FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IndexVersionError, match=rf"written by a newer imgsim \(index format {store.FORMAT_VERSION + 1}\); "
                                                rf"this imgsim reads format {store.FORMAT_VERSION} and older\. Upgrade imgsim"):
        load_index(tmp_path / "ix")


def test_truncated_vectors_are_reported_not_a_numpy_traceback(tmp_path):
    write_small(tmp_path / "ix", rows=50, dims=64)
    vec = tmp_path / "ix" / "gen-000001" / "vectors.npy"
    size = vec.stat().st_size
    with open(vec, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(IndexCorruptError, match=rf"vectors.npy in .* is truncated or altered: expected {size:,} bytes, "
                                                rf"found {size - 100:,}\. Rebuild it with"):
        load_index(tmp_path / "ix")


def test_invalid_manifest_json_is_reported(tmp_path):
    write_small(tmp_path / "ix")
    manifest = tmp_path / "ix" / "gen-000001" / "manifest.json"
    size = manifest.stat().st_size
    manifest.write_text("[{" + " " * (size - 2))  # same size, broken content
    with pytest.raises(IndexCorruptError, match=r"manifest.json in .* is not valid JSON"):
        load_index(tmp_path / "ix")


def test_inconsistent_counts_are_reported(tmp_path):
    write_small(tmp_path / "ix")
    meta_path = tmp_path / "ix" / "gen-000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["count"] = 4
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IndexCorruptError, match=r"is inconsistent: 3 manifest entries, vectors \(3, 4\)"):
        load_index(tmp_path / "ix")


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(IndexNotFound, match=r"No index at .*nothing\. Create one with `python -m imgsim index"):
        load_index(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(IndexNotFound, match=r"is not an imgsim index \(it has no CURRENT file\)"):
        load_index(tmp_path / "other")


def test_second_writer_is_refused_while_locked(tmp_path):
    with store.locked(tmp_path / "ix"):
        with pytest.raises(store.ImgsimError, match="Another imgsim run is writing the index"):
            with store.locked(tmp_path / "ix"):
                pass


def test_checkpoints_round_trip_and_ignore_damaged_or_foreign_ones(tmp_path):
    entries = [store.Entry("a.jpg", 1, 2, "h" * 64), store.Entry("b.jpg", 3, 4, "g" * 64)]
    store.write_checkpoint(tmp_path, "cfg", entries, np.ones((2, 3), np.float32))
    store.write_checkpoint(tmp_path, "other", entries[:1], np.zeros((1, 3), np.float32))
    (tmp_path / store.PENDING / "chunk-broken.npz").write_bytes(b"PK\x03\x04 half written")
    found = store.read_checkpoints(tmp_path, "cfg")
    assert sorted(found) == [("a.jpg", 1, 2), ("b.jpg", 3, 4)]
    np.testing.assert_array_equal(found[("b.jpg", 3, 4)][1], np.ones(3))
    store.clear_checkpoints(tmp_path)
    assert store.read_checkpoints(tmp_path, "cfg") == {}


def test_damaged_columnar_manifest_is_reported_not_a_numpy_traceback(tmp_path):
    rows = store.COLUMNAR_FROM
    writer = store.GenerationWriter(tmp_path / "ix", rows, 1)
    writer.vectors[:] = 1.0
    entries = [store.Entry(f"p{i}.jpg", 1, 2, f"{i:064x}") for i in range(rows)]
    writer.commit({"backbone": "resnet50", "pooling": "avg", "root": "/photos", "created": "c", "updated": "u",
                   "weights": {"mode": "random", "identity": "random:0", "label": "random", "path": None, "seed": 0}},
                  entries, [])
    assert load_index(tmp_path / "ix").paths[-1] == f"p{rows - 1}.jpg"
    manifest = tmp_path / "ix" / "gen-000001" / "manifest.npy"
    data = bytearray(manifest.read_bytes())
    data[:6] = b"NOTNPY"  # same size, damaged header
    manifest.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"manifest.npy in .* is damaged .*Rebuild it with"):
        load_index(tmp_path / "ix")


def test_a_folder_left_by_a_failed_first_run_says_create_one(tmp_path):
    with store.locked(tmp_path / "ix"):  # a first run that failed before its first commit leaves .lock (and pending/)
        store.write_checkpoint(tmp_path / "ix", "cfg", [store.Entry("a.jpg", 1, 2, "h" * 64)], np.ones((1, 3), np.float32))
    with pytest.raises(IndexNotFound, match=r"No index at .*ix\. Create one with `python -m imgsim index"):
        load_index(tmp_path / "ix")


def test_copy_rows_falls_back_when_the_file_system_cannot_copy_ranges(tmp_path, monkeypatch):
    import errno

    write_small(tmp_path / "ix", rows=4, dims=3, value=2.0)
    old = load_index(tmp_path / "ix")

    def unsupported(*a, **k):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(store.os, "copy_file_range", unsupported, raising=False)
    writer = store.GenerationWriter(tmp_path / "ix", 3, 3)
    writer.copy_rows(old.vectors, [(0, 1), (1, 2), (2, 3)])
    np.testing.assert_array_equal(writer.vectors, 2.0)
    writer.abort()


def test_a_generation_replaced_while_it_is_being_opened_is_not_called_damaged(tmp_path, monkeypatch):
    write_small(tmp_path / "ix", marker="a")
    real = store._read_json
    state = {"raced": False}

    def racing(path, index_dir):
        if not state["raced"]:  # another process commits (and removes this generation) right after CURRENT was read
            state["raced"] = True
            write_small(tmp_path / "ix", rows=2, marker="b")
        return real(path, index_dir)

    monkeypatch.setattr(store, "_read_json", racing)
    ix = load_index(tmp_path / "ix")
    assert ix.generation == "gen-000002" and ix.paths == ["b0.jpg", "b1.jpg"]
    state["raced"] = False
    assert store.index_root(tmp_path / "ix") == __import__("pathlib").Path("/photos")
    assert load_index(tmp_path / "ix").generation == "gen-000003"


def test_row_of_finds_every_path_in_path_order_and_in_any_other_order(index_copy):
    from imgsim.store.generations import load_index

    ix = load_index(index_copy)
    assert ix.paths == sorted(ix.paths)
    assert [ix.row_of(p) for p in ix.paths] == list(range(ix.count))
    assert ix.row_of("nope.jpg") is None and ix.row_of("") is None and ix.row_of("zzz") is None
    ix._paths = list(reversed(ix.paths))  # an order a binary search cannot use
    ix._rows = {}
    assert [ix.row_of(p) for p in ix._paths] == list(range(ix.count))
    assert ix.row_of("nope.jpg") is None


def test_a_file_altered_with_the_same_size_is_seen_by_its_mtime_and_by_its_inode(tmp_path):
    write_small(tmp_path / "ix")
    ix = load_index(tmp_path / "ix")
    gen = tmp_path / "ix" / ix.generation
    assert ix.changed_on_disk() == []
    # Rewritten in place, same size: the mtime moves.
    vectors = gen / "vectors.npy"
    before = vectors.stat()
    vectors.write_bytes(vectors.read_bytes()[:-4] + b"\0\0\0\0")
    os.utime(vectors, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert vectors.stat().st_size == before.st_size and vectors.stat().st_ino == before.st_ino
    assert ix.changed_on_disk() == ["vectors.npy"]
    # Replaced by another file of the same size and the same mtime (a copy made with cp -p, then mv): the inode.
    ix.record_files()
    extra = gen / "extra.npy"
    old = extra.stat()
    other = gen / "extra.npy.new"
    other.write_bytes(extra.read_bytes())
    os.utime(other, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(other, extra)
    assert (extra.stat().st_size, extra.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert ix.changed_on_disk() == ["extra.npy"]
