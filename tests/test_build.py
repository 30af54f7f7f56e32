"""Incremental indexing: add / change / delete, touched files, resume after a crash, settings checks."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from imgsim import decode
from imgsim.build import build_index
from imgsim.errors import ImgsimError, SkipReason
from imgsim.store.generations import load_index

from .conftest import make_photo


class Counting:
    """Wraps the session model: counts embedded images and can die on a given call, like a killed run."""

    def __init__(self, inner, batch_size=8, die_on_call=None):
        self.inner, self.batch_size, self.die_on_call = inner, batch_size, die_on_call
        self.weights, self.device, self.pooling, self.dims = inner.weights, inner.device, inner.pooling, inner.dims
        self.name = inner.name  # the backbone it stands for: check_compatible compares it with the index's
        self.calls = self.embedded = 0

    def embed(self, images):
        self.calls += 1
        if self.calls == self.die_on_call:
            raise KeyboardInterrupt("killed")
        self.embedded += len(images)
        return self.inner.embed(images)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for i in range(6):
        make_photo(root / ("cats" if i % 2 else "dogs") / f"img {i} é.jpg", seed=300 + i)
    return root


def run(folder, index_dir, model, **kw):
    return build_index(folder, index_dir, weights=kw.pop("weights", "random"),
                       model_factory=lambda w, p, b: model, **kw)


def test_first_run_then_incremental_add_change_delete(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    model = Counting(random_extractor)
    first = run(folder, ix_dir, model)
    assert (first.added, first.extracted, first.indexed, first.committed) == (6, 6, 6, True)
    before = load_index(ix_dir)
    old_vectors = {p: np.array(before.vectors[i]) for i, p in enumerate(before.paths)}

    make_photo(folder / "cats" / "new.jpg", seed=999)
    make_photo(folder / "dogs" / "img 0 é.jpg", seed=1234, size=(90, 90))  # changed content
    (folder / "cats" / "img 1 é.jpg").unlink()
    model.embedded = 0
    second = run(folder, ix_dir, model)
    assert (second.added, second.changed, second.removed, second.unchanged) == (1, 1, 1, 4)
    assert model.embedded == 2
    after = load_index(ix_dir)
    assert after.paths == sorted(["cats/new.jpg", "cats/img 3 é.jpg", "cats/img 5 é.jpg", "dogs/img 0 é.jpg",
                                  "dogs/img 2 é.jpg", "dogs/img 4 é.jpg"])
    for path in ("cats/img 3 é.jpg", "dogs/img 4 é.jpg"):
        np.testing.assert_array_equal(after.vectors[after.row_of(path)], old_vectors[path])
    assert not np.allclose(after.vectors[after.row_of("dogs/img 0 é.jpg")], old_vectors["dogs/img 0 é.jpg"])
    expected = random_extractor.embed(decode.model_input((folder / "cats" / "new.jpg").read_bytes())[None])[0]
    np.testing.assert_allclose(after.vectors[after.row_of("cats/new.jpg")], expected, atol=1e-6)


def test_unchanged_folder_is_not_rewritten(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    model = Counting(random_extractor)
    run(folder, ix_dir, model)
    model.embedded = 0
    again = run(folder, ix_dir, model, weights=None)  # defaults to the index's own weights
    assert again.committed is False and again.unchanged == 6 and model.embedded == 0
    assert load_index(ix_dir).generation == "gen-000001"


def test_touched_file_is_rehashed_not_reextracted_and_map_is_kept(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    model = Counting(random_extractor)
    run(folder, ix_dir, model)
    before = load_index(ix_dir)
    map_before = np.array(before.array("map_xy"))
    target = folder / "dogs" / "img 2 é.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    model.embedded = 0
    report = run(folder, ix_dir, model)
    assert report.committed and report.unchanged == 6 and report.extracted == 0 and model.embedded == 0
    after = load_index(ix_dir)
    assert after.entries[after.row_of("dogs/img 2 é.jpg")].mtime_ns == st.st_mtime_ns + 5_000_000_000
    np.testing.assert_array_equal(after.array("map_xy"), map_before)


def test_killed_run_resumes_without_redoing_finished_work(folder, tmp_path, random_extractor):
    for i in range(6, 10):
        make_photo(folder / "more" / f"m{i}.jpg", seed=500 + i)
    ix_dir = tmp_path / "ix"
    dying = Counting(random_extractor, batch_size=2, die_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        run(folder, ix_dir, dying, checkpoint_every=2)
    assert dying.embedded == 6
    assert not (ix_dir / "CURRENT").exists()  # nothing half-written is visible
    fresh = Counting(random_extractor, batch_size=2)
    report = run(folder, ix_dir, fresh, checkpoint_every=2)
    assert report.resumed == 6 and report.extracted == 4 and fresh.embedded == 4
    ix = load_index(ix_dir)
    assert ix.count == 10
    assert not (ix_dir / "pending").exists()
    reference = run(folder, tmp_path / "ref", Counting(random_extractor))
    assert reference.extracted == 10
    np.testing.assert_allclose(load_index(tmp_path / "ref").vectors, ix.vectors, atol=1e-6)


def test_skipped_files_have_reasons_and_ids_stay_aligned(folder, tmp_path, random_extractor):
    (folder / "dogs" / "empty.jpg").write_bytes(b"")
    (folder / "dogs" / "fake.png").write_bytes(b"<html>not a png</html>")
    good = (folder / "cats" / "img 3 é.jpg").read_bytes()
    (folder / "cats" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    report = run(folder, tmp_path / "ix", Counting(random_extractor))
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons == {"dogs/empty.jpg": SkipReason.EMPTY, "dogs/fake.png": SkipReason.NOT_IMAGE,
                       "cats/truncated.jpg": SkipReason.CORRUPT}
    ix = load_index(tmp_path / "ix")
    assert ix.count == 6 and {s.path for s in ix.skipped} == set(reasons)
    row = ix.row_of("cats/img 3 é.jpg")
    np.testing.assert_allclose(ix.vectors[row], random_extractor.embed(decode.model_input(good)[None])[0], atol=1e-6)


def test_other_settings_are_refused_unless_rebuild(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    run(folder, ix_dir, Counting(random_extractor))
    with pytest.raises(ImgsimError, match=r"was built with pooling flatten \(asked: avg\)\. Re-run with the same "
                                          r"settings, or add --rebuild"):
        build_index(folder, ix_dir, pooling="avg")
    with pytest.raises(ImgsimError, match=r"was built with weights random \(seed 0\).*\(asked: random:7\)"):
        build_index(folder, ix_dir, weights="random:7")
    other = tmp_path / "elsewhere"
    shutil.copytree(folder, other)
    with pytest.raises(ImgsimError, match=r"was built from .*photos, not .*elsewhere"):
        build_index(other, ix_dir)


def test_damaged_index_asks_for_rebuild_and_rebuild_works(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    run(folder, ix_dir, Counting(random_extractor))
    with open(ix_dir / "gen-000001" / "vectors.npy", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(ImgsimError, match=r"--rebuild"):
        run(folder, ix_dir, Counting(random_extractor))
    report = run(folder, ix_dir, Counting(random_extractor), rebuild=True)
    assert report.extracted == 6 and load_index(ix_dir).count == 6


def test_empty_folder_gives_an_empty_index_that_can_grow(tmp_path, random_extractor):
    (tmp_path / "empty").mkdir()
    report = run(tmp_path / "empty", tmp_path / "ix", Counting(random_extractor))
    assert report.indexed == 0 and report.committed
    assert load_index(tmp_path / "ix").count == 0
    make_photo(tmp_path / "empty" / "first.jpg", seed=5)
    grown = run(tmp_path / "empty", tmp_path / "ix", Counting(random_extractor), weights=None)
    assert grown.added == 1 and load_index(tmp_path / "ix").paths == ["first.jpg"]
    assert load_index(tmp_path / "ix").weights["identity"] == "random:0"


def test_killed_rebuild_resumes_its_own_work(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    run(folder, ix_dir, Counting(random_extractor))
    dying = Counting(random_extractor, batch_size=2, die_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        run(folder, ix_dir, dying, checkpoint_every=2, rebuild=True)
    assert dying.embedded == 4
    assert load_index(ix_dir).count == 6  # the old index is still served while the rebuild is unfinished
    fresh = Counting(random_extractor, batch_size=2)
    report = run(folder, ix_dir, fresh, checkpoint_every=2, rebuild=True)
    assert report.resumed == 4 and report.extracted == 2 and fresh.embedded == 2 and report.committed
    assert load_index(ix_dir).count == 6 and not (ix_dir / "pending").exists()


def test_an_index_never_mixes_float16_and_float32_vectors(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    run(folder, ix_dir, Counting(random_extractor))
    assert load_index(ix_dir).meta["precision"] == "float32"
    make_photo(folder / "cats" / "new.jpg", seed=999)
    with pytest.raises(ImgsimError, match=r"was built with --precision float32 \(asked: float16\); the vectors of "
                                          r"the two cannot be mixed\. Re-run with --precision float32, or add --rebuild"):
        run(folder, ix_dir, Counting(random_extractor), precision="float16")
    model = Counting(random_extractor)
    run(folder, ix_dir, model)  # no --precision: the index's own
    assert model.embedded == 1 and load_index(ix_dir).meta["precision"] == "float32"


def test_a_file_name_that_is_not_utf8_is_skipped_and_the_run_commits(folder, tmp_path, random_extractor):
    bad = os.fsencode(str(folder)) + b"/cats/caf\xe9.jpg"
    with open(bad, "wb") as fh:
        fh.write((folder / "cats" / "img 1 é.jpg").read_bytes())
    report = run(folder, tmp_path / "ix", Counting(random_extractor))
    assert report.committed and report.indexed == 6
    ix = load_index(tmp_path / "ix")
    assert [(s.path, s.reason) for s in ix.skipped] == [("cats/caf\ufffd.jpg", SkipReason.UNREADABLE)]
    again = run(folder, tmp_path / "ix", Counting(random_extractor))
    assert again.committed is False  # the skip is stable: nothing is rewritten


def test_run_killed_after_extraction_resumes_with_the_weights_recorded(folder, tmp_path, random_extractor, monkeypatch):
    import imgsim.build

    ix_dir = tmp_path / "ix"
    real = imgsim.build.derive

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while deriving the map")

    monkeypatch.setattr(imgsim.build, "derive", killed)
    with pytest.raises(KeyboardInterrupt):
        run(folder, ix_dir, Counting(random_extractor))
    monkeypatch.setattr(imgsim.build, "derive", real)
    fresh = Counting(random_extractor)
    report = run(folder, ix_dir, fresh)
    assert report.resumed == 6 and fresh.embedded == 0 and report.committed
    reference = run(folder, tmp_path / "ref", Counting(random_extractor))
    # The resumed index records the same weights (identity and label) as one built in a single run.
    assert load_index(ix_dir).weights == load_index(tmp_path / "ref").weights
    assert report.weights_label == reference.weights_label == "random (seed 0) - similarities are not meaningful"


def test_an_explicit_search_choice_is_remembered_even_when_nothing_else_changed(folder, tmp_path, random_extractor):
    from imgsim.search import choose_method

    ix_dir = tmp_path / "ix"
    run(folder, ix_dir, Counting(random_extractor))
    assert load_index(ix_dir).meta["search"] == {"method": "exact", "chosen": "auto"}
    # Pinning exact search on an unchanged folder must be recorded, or the index switches to
    # approximate search by itself once it grows past the threshold.
    run(folder, ix_dir, Counting(random_extractor), search="exact")
    meta = load_index(ix_dir).meta
    assert meta["search"]["chosen"] == "asked"
    assert choose_method(None, meta, 60_000) == ("exact", "asked")
    # The same through a run that only re-hashes a touched file (vectors and derived data reused).
    run(folder, tmp_path / "ix2", Counting(random_extractor))
    target = folder / "dogs" / "img 2 é.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    run(folder, tmp_path / "ix2", Counting(random_extractor), search="exact")
    assert load_index(tmp_path / "ix2").meta["search"] == {"method": "exact", "chosen": "asked"}


class Half(Counting):
    """The session model presented as a float16 one (what --precision float16 builds)."""

    precision = "float16"


def test_a_model_of_another_precision_never_adds_to_an_index(folder, tmp_path, random_extractor):
    ix_dir = tmp_path / "ix"
    run(folder, ix_dir, Half(random_extractor), precision="float16")
    assert load_index(ix_dir).meta["precision"] == "float16"
    make_photo(folder / "cats" / "new.jpg", seed=999)
    # The dashboard updates an index with its own cached model, a float32 one: it must not slip in.
    with pytest.raises(ImgsimError, match=r"The model computes in float32 but the index at .* holds float16 vectors"):
        run(folder, ix_dir, Counting(random_extractor))
    assert load_index(ix_dir).count == 6
    # A new index records the precision its model really computed in, whatever was asked.
    run(folder, tmp_path / "ix2", Counting(random_extractor), precision="float16")
    assert load_index(tmp_path / "ix2").meta["precision"] == "float32"


def test_the_model_stage_mentions_a_download_only_for_imagenet_weights(folder, tmp_path, random_extractor):
    from imgsim.progress import describe

    seen = []
    build_index(folder, tmp_path / "ix", weights="random", model_factory=lambda w, p, b: random_extractor,
                progress=lambda stage, done, total: seen.append(describe(stage, done, total, 0.0)))
    assert "Loading the model…" in seen
    assert not [line for line in seen if "downloads" in line]
    assert describe("model", 0, None, 0.0) == ("Loading ResNet50 (on first use Keras downloads its ImageNet "
                                               "weights, 94.7 MB)…")


# --- metadata --------------------------------------------------------------------------------------------------

def test_metadata_follows_an_incremental_update_and_a_new_sidecar_alone_writes_a_generation(tmp_path):
    from imgsim.collection import Collection

    from .test_filters_search import StandIn, gps_exif, write_photo

    root = tmp_path / "photos"
    write_photo(root / "a" / "one.jpg", 1, (60, 40), gps_exif(48.8566, 2.3522, "2023:07:14 10:22:01"))
    write_photo(root / "a" / "two.jpg", 2, (50, 40))
    write_photo(root / "b" / "three.jpg", 3, (70, 40))
    sidecar = tmp_path / "tags.jsonl"
    sidecar.write_text('{"path": "a/one.jpg", "caption": "the tower", "stars": 5}\n'
                       '{"path": "a/two.jpg", "caption": "a bench", "stars": 2}\n', encoding="utf-8")
    model = StandIn()

    def build(**kw):
        return build_index(root, tmp_path / "ix", weights="random", pooling="avg", model_factory=lambda w, p, b: model,
                           **kw)

    first = build(metadata=sidecar)
    assert first.metadata_read == 3 and first.metadata_problems == {} and first.sidecar.unknown == []
    before = Collection.open(tmp_path / "ix").metadata
    assert before.row(0) == {"folder": "a", "name": "one.jpg", "bytes": (root / "a" / "one.jpg").stat().st_size,
                             "width": 60, "height": 40, "format": "JPEG", "taken": "2023-07-14T10:22:01",
                             "lat": pytest.approx(48.8566, abs=1e-6), "lon": pytest.approx(2.3522, abs=1e-6),
                             "caption": "the tower", "stars": 5}

    write_photo(root / "a" / "two.jpg", 20, (90, 40))  # changed: new width, same caption (the sidecar is by path)
    write_photo(root / "c" / "four.jpg", 4, (30, 40))  # added: no sidecar row
    (root / "b" / "three.jpg").unlink()
    second = build()  # no --metadata: the columns of the first sidecar are kept
    assert (second.added, second.changed, second.removed, second.metadata_read) == (1, 1, 1, 2)
    col = Collection.open(tmp_path / "ix")
    assert col.paths == ["a/one.jpg", "a/two.jpg", "c/four.jpg"]
    rows = col.metadata_of(range(3))
    assert rows[0] == before.row(0)
    assert (rows[1]["width"], rows[1]["caption"], rows[1]["stars"]) == (90, "a bench", 2)
    assert rows[2]["width"] == 30 and "caption" not in rows[2] and "taken" not in rows[2]
    assert col.index.meta["metadata"]["sidecar"] == "tags.jsonl"
    assert build().committed is False  # nothing changed, metadata included
    vectors = np.array(col.index.vectors)

    sidecar.write_text('{"path": "c/four.jpg", "caption": "a gull"}\n', encoding="utf-8")
    third = build(metadata=sidecar)
    assert third.committed and third.extracted == 0
    col = Collection.open(tmp_path / "ix")
    assert [r.get("caption") for r in col.metadata_of(range(3))] == [None, None, "a gull"]
    assert "stars" not in col.metadata.kinds  # a new sidecar replaces the columns of the earlier one
    assert col.index.generation == "gen-000003"
    np.testing.assert_array_equal(col.index.vectors, vectors)


def test_a_corrupt_exif_block_is_counted_never_a_skipped_image(tmp_path):
    from .test_filters_search import StandIn, write_photo

    root = tmp_path / "photos"
    write_photo(root / "fine.jpg", 1, (50, 40))
    write_photo(root / "broken-exif.jpg", 2, (50, 40), exif=b"Exif\x00\x00not a tiff header at all")
    report = build_index(root, tmp_path / "ix", weights="random", pooling="avg", model_factory=lambda w, p, b: StandIn())
    assert report.indexed == 2 and report.skipped == []
    assert report.metadata_problems == {"corrupt EXIF block": 1}


def test_an_index_built_before_metadata_opens_refuses_filters_and_gains_metadata_on_update(tmp_path,
                                                                                          extractor_factory):
    from imgsim.collection import Collection
    from imgsim.metadata.filters import parse_where

    from .test_compat import old_index_at

    photos, index = old_index_at(tmp_path)
    old = Collection.open(index)
    assert old.metadata is None and old.metadata_fields() == [] and not old.has_text_metadata
    assert len(old.neighbors_of_row(0, 3).neighbors) == 3  # queries as before
    with pytest.raises(ImgsimError, match=r"holds no metadata \(it was built before imgsim read any\).*"
                                          r"python -m imgsim index .* --index "):
        old.neighbors_of_row(0, 3, where=parse_where(["width > 10"]))
    report = build_index(photos, index, model_factory=extractor_factory)
    assert report.committed and report.extracted == 0 and report.metadata_read == 12
    updated = Collection.open(index)
    np.testing.assert_array_equal(updated.index.vectors, old.index.vectors)
    assert {f.name: f.count for f in updated.metadata_fields()}["width"] == 12
    found = updated.neighbors_of_row(0, 12, where=parse_where([f"folder = {updated.labels[0]}"])).neighbors
    assert found and all(updated.labels[n.row] == updated.labels[0] for n in found)
