"""The CLI contract of DESIGN.md: exact forms, JSON shapes, exit codes, messages instead of tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imgsim.models import native
from imgsim.cli import main
from imgsim.collection import Collection
from imgsim.store.generations import FORMAT_VERSION  # 2 since the columnar manifest and the ANN index (reads 1 too)

from .conftest import assert_reference_neighbors, make_photo, reference_distances

REPO = Path(__file__).resolve().parents[1]


def run_json(capsys, *args) -> dict:
    assert main(list(args) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_query_indexed_image_returns_itself_first(capsys, built_index, photo_dir):
    out = run_json(capsys, "query", str(built_index), str(photo_dir / "reds" / "r2.jpg"), "-k", "4")
    assert out["query"] == str(photo_dir / "reds" / "r2.jpg")
    assert out["weights"] == "random" and out["random_weights"] is True
    hits = out["neighbors"]
    assert len(hits) == 4 and set(hits[0]) == {"path", "distance", "similarity", "metadata"}
    assert hits[0] == {"path": "reds/r2.jpg", "distance": 0.0, "similarity": 1.0, "metadata": {
        "folder": "reds", "name": "r2.jpg", "bytes": (photo_dir / "reds" / "r2.jpg").stat().st_size, "width": 160,
        "height": 120, "format": "JPEG"}}
    dists = [h["distance"] for h in hits]
    assert dists == sorted(dists) and all(0 <= d <= 2 for d in dists)
    for h in hits:
        assert h["similarity"] == pytest.approx(1 - h["distance"] ** 2 / 2, abs=1e-5)


def test_query_new_image_is_embedded_and_k_clamped(capsys, built_index, tmp_path, random_extractor):
    new = make_photo(tmp_path / "outside.jpg", seed=777)
    out = run_json(capsys, "query", str(built_index), str(new), "-k", "50")
    assert out["k"] == 12 and len(out["neighbors"]) == 12
    assert all(h["distance"] > 0 for h in out["neighbors"])
    # The new image's own vector: the same rows at the same distances as the notebook's per-image path gives.
    reference = reference_distances(random_extractor.model, Collection.open(built_index), new)
    assert_reference_neighbors([(h["path"], h["distance"]) for h in out["neighbors"]], reference)


def test_query_copy_of_indexed_file_is_found_by_content(capsys, built_index, photo_dir, tmp_path):
    copy = tmp_path / "copy.png"
    shutil.copy(photo_dir / "blues" / "b1.png", copy)
    out = run_json(capsys, "query", str(built_index), str(copy), "-k", "2")
    assert {k: out["neighbors"][0][k] for k in ("path", "distance", "similarity")} == \
        {"path": "blues/b1.png", "distance": 0.0, "similarity": 1.0}


def test_info_json(capsys, built_index, photo_dir):
    out = run_json(capsys, "info", str(built_index))
    assert out["indexed"] == 12
    assert out["skipped"] == [{"path": "broken.jpg", "reason": "not an image", "detail": "no image format recognised"}]
    assert (out["weights"], out["pooling"], out["dims"], out["version"]) == ("random", "flatten", 100352, FORMAT_VERSION)
    assert out["random_weights"] is True and out["ignored"] == 1
    assert out["root"] == str(photo_dir.resolve())


def test_index_then_dedup_finds_the_copied_file(capsys, tmp_path, random_extractor, monkeypatch):
    src = tmp_path / "src"
    for i in range(4):
        make_photo(src / f"p{i}.jpg", seed=60 + i)
    shutil.copy(src / "p1.jpg", src / "p1 copy.jpg")
    Image.open(src / "p2.jpg").resize((150, 110)).save(src / "p2 small.jpg", quality=90)
    monkeypatch.setattr("imgsim.engines.local.make_backbone", lambda *a, **k: random_extractor)
    assert main(["index", str(src), "--index", str(tmp_path / "ix"), "--weights", "random", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"Indexed 6 images from {src.resolve()} into {tmp_path / 'ix'}" in text
    assert "6 added, 0 changed, 0 removed, 0 unchanged" in text
    out = run_json(capsys, "dedup", str(tmp_path / "ix"), "--threshold", "0.0001")
    assert out["threshold"] == 0.0001 and out["groups"] == [["p1 copy.jpg", "p1.jpg"]]
    dist = out["nearest_distance_distribution"]
    assert dist["percentiles"]["1"] == 0.0 and list(dist["percentiles"]) == ["1", "5", "10", "25", "50", "75", "90"]
    assert dist["images_within"][0] == [0.05, 2]  # the copied pair
    loose = run_json(capsys, "dedup", str(tmp_path / "ix"), "--threshold", "2")
    assert loose["groups"] == [sorted(["p0.jpg", "p1.jpg", "p1 copy.jpg", "p2.jpg", "p2 small.jpg", "p3.jpg"])]
    assert main(["index", str(src), "--index", str(tmp_path / "ix"), "--quiet"]) == 0
    assert "(nothing changed)" in capsys.readouterr().out


def test_evaluate_json(capsys, built_index):
    out = run_json(capsys, "evaluate", str(built_index), "-k", "3")
    assert out["k"] == 3 and out["queries"] == 11 and out["unlabelled"] == 1
    assert [s["label"] for s in out["per_label"]] == ["blues", "reds"]
    assert out["baseline_precision_at_k"] == pytest.approx((6 * 5 / 11 + 5 * 4 / 11) / 11)
    assert out["random_weights"] is True


def test_grid_writes_png(capsys, built_index, tmp_path):
    assert main(["grid", str(built_index), "--out", str(tmp_path / "g.png"), "--cell", "32"]) == 0
    assert "12 images on a 4x4 grid" in capsys.readouterr().out
    assert Image.open(tmp_path / "g.png").size == (128, 128)


def test_missing_index_is_a_message_and_exit_1(capsys, tmp_path):
    assert main(["info", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: No index at {tmp_path / 'none'}. Create one with `python -m imgsim index")
    assert "Traceback" not in err


def test_imagenet_unavailable_exit_1_with_instructions(capsys, tmp_path, monkeypatch):
    keras = native.import_keras()
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(Exception("URL fetch failure")))
    monkeypatch.delenv("IMGSIM_WEIGHTS", raising=False)
    make_photo(tmp_path / "src" / "a.jpg", seed=1)
    assert main(["index", str(tmp_path / "src"), "--index", str(tmp_path / "ix"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ImageNet weights for ResNet50 are not available")
    assert "--weights random" in err and "Traceback" not in err
    assert not (tmp_path / "ix" / "CURRENT").exists()


def test_bad_threshold_is_a_usage_error(capsys, built_index):
    with pytest.raises(SystemExit) as info:
        main(["dedup", str(built_index), "--threshold", "3"])
    assert info.value.code == 2
    assert "must be between 0 and 2" in capsys.readouterr().err


def test_python_dash_m_entry_point(built_index):
    proc = subprocess.run([sys.executable, "-m", "imgsim", "info", str(built_index), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["indexed"] == 12
    bad = subprocess.run([sys.executable, "-m", "imgsim", "query", str(built_index), "/no/such.jpg"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: Query image not found: /no/such.jpg"


def test_evaluate_on_the_demo_collection_reports_random_weights(capsys, tmp_path, random_extractor, monkeypatch):
    monkeypatch.setattr("imgsim.engines.local.make_backbone", lambda *a, **k: random_extractor)
    demo = REPO / "data" / "demo"
    assert main(["index", str(demo), "--index", str(tmp_path / "demo"), "--weights", "random", "--quiet"]) == 0
    capsys.readouterr()
    out = run_json(capsys, "evaluate", str(tmp_path / "demo"))
    assert out["random_weights"] is True and out["weights"] == "random"
    assert out["queries"] == 373 and len(out["per_label"]) == 20 and out["k"] == 5
    assert main(["evaluate", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "Random weights: similarities are not meaningful (use ImageNet weights for real results)."


def test_rebuild_without_weights_uses_imgsim_weights(capsys, tmp_path, random_extractor, monkeypatch):
    import imgsim.engines.local

    src = tmp_path / "src"
    for i in range(3):
        make_photo(src / f"p{i}.jpg", seed=90 + i)
    asked = []

    def model(spec, weights, pooling="flatten", batch_size=16, **options):
        asked.append((weights.mode, weights.seed))
        return random_extractor

    monkeypatch.setattr(imgsim.engines.local, "make_backbone", model)
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    assert main(["index", str(src), "--index", str(tmp_path / "ix"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["index", str(src), "--index", str(tmp_path / "ix"), "--rebuild", "--quiet"]) == 0
    assert asked == [("random", 0), ("random", 0)]  # not ImageNet, which this machine cannot download
    assert "weights: random (seed 0)" in capsys.readouterr().out
    assert run_json(capsys, "info", str(tmp_path / "ix"))["random_weights"] is True


def test_incremental_index_of_a_float16_index_needs_no_precision_flag(capsys, tmp_path, random_extractor, monkeypatch):
    import imgsim.engines.local

    src = tmp_path / "src"
    for i in range(3):
        make_photo(src / f"p{i}.jpg", seed=40 + i)
    class AsAsked:  # the session model, reporting the precision it was built with
        def __init__(self, precision):
            self.precision = precision or "float32"

        def __getattr__(self, name):
            return getattr(random_extractor, name)

    monkeypatch.setattr(imgsim.engines.local, "make_backbone", lambda *a, **k: AsAsked(k.get("precision")))
    ix = str(tmp_path / "ix")
    assert main(["index", str(src), "--index", ix, "--weights", "random", "--precision", "float16", "--quiet"]) == 0
    make_photo(src / "p3.jpg", seed=43)
    capsys.readouterr()
    # Like --weights and --pooling, --precision defaults to the index's own: a plain update must not be refused.
    assert main(["index", str(src), "--index", ix, "--quiet"]) == 0, capsys.readouterr().err
    assert "1 added" in capsys.readouterr().out
    info = run_json(capsys, "info", ix)
    assert info["indexed"] == 4
    from imgsim.store.generations import load_index

    assert load_index(ix).meta["precision"] == "float16"


def test_unwritable_outputs_are_a_message_and_exit_1(capsys, built_index, tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "g.png"
    assert main(["grid", str(built_index), "--out", str(missing)]) == 1
    assert capsys.readouterr().err == f"error: No such file or directory: {missing}\n"
    assert main(["grid", str(built_index), "--out", str(tmp_path / "g.nopicture")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot write {tmp_path / 'g.nopicture'}: unknown file extension") and "Traceback" not in err


def test_a_too_large_flatten_index_is_refused_before_any_work_unless_allow_large(capsys, tmp_path, random_extractor,
                                                                                monkeypatch):
    src = tmp_path / "src"
    for i in range(4):
        make_photo(src / f"p{i}.jpg", seed=90 + i)
    built = []

    def model(*args, **kwargs):
        built.append(args)
        return random_extractor

    monkeypatch.setattr("imgsim.engines.local.make_backbone", model)
    monkeypatch.setattr("imgsim.build.FLATTEN_LIMIT_BYTES", 10**6)  # 4 flatten vectors are 1.6 MB
    index = tmp_path / "ix"
    assert main(["index", str(src), "--index", str(index), "--weights", "random", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert ("Indexing 4 images with --pooling flatten would need about 0 GB (392 KiB per image). With --pooling avg "
            "it would be about 0.0 GB. Choose --pooling avg, or add --allow-large to index in flatten mode anyway."
            ) in captured.err
    # Refused before the model is built or anything is extracted: no generation, no checkpoint.
    assert "Traceback" not in captured.err and built == []
    assert [p.name for p in index.iterdir() if p.name != ".lock"] == []
    assert main(["index", str(src), "--index", str(index), "--weights", "random", "--quiet", "--allow-large"]) == 0
    assert f"Indexed 4 images from {src.resolve()} into {index}" in capsys.readouterr().out
    assert len(built) == 1 and Collection.open(index).index.dims == 100352


def test_index_help_names_every_registered_backbone(capsys):
    from imgsim.models.base import BACKBONES

    with pytest.raises(SystemExit):
        main(["index", "--help"])
    usage = capsys.readouterr().out
    assert "--backbone resnet50|efficientnet-lite0|clip[:PRESET_OR_DIR]" in usage
    assert list(BACKBONES) == ["resnet50", "efficientnet-lite0", "clip"]
