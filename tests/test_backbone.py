"""The backbone interface: parsing --backbone, capabilities and dims without a model, ResNet50 as a backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsim.models.base import (BACKBONES, Backbone, BackboneSpec, Capabilities, TextSearchUnavailable, backbone_class,
                                default_dims, make_backbone, text_search_help)
from imgsim.errors import ImgsimError
from imgsim.models.embedding import normalize
from imgsim.models.resnet50 import pool


@pytest.mark.parametrize("text, name, preset", [
    (None, "resnet50", None), ("resnet50", "resnet50", None), (" CLIP ", "clip", None),
    ("efficientnet-lite0", "efficientnet-lite0", None),
    ("clip:clip_vit_large_patch14", "clip", "clip_vit_large_patch14"), ("clip:/models/my preset", "clip", "/models/my preset"),
])
def test_backbone_spec_parses_names_and_presets(text, name, preset):
    spec = BackboneSpec.parse(text)
    assert (spec.name, spec.preset) == (name, preset)
    assert BackboneSpec.parse(spec.spec) == spec
    assert spec.supports_text == (name == "clip")


def test_backbone_spec_refuses_unknown_names_with_the_choices():
    with pytest.raises(ImgsimError, match=r"Unknown backbone 'vit': use resnet50, efficientnet-lite0, clip or clip:PRESET_OR_DIR"):
        BackboneSpec.parse("vit")
    with pytest.raises(ImgsimError, match="The resnet50 backbone takes no preset"):
        BackboneSpec.parse("resnet50:imagenet")


def test_indexes_from_before_clip_are_resnet50():
    assert BackboneSpec.from_meta({"pooling": "flatten"}) == BackboneSpec("resnet50")
    assert BackboneSpec.from_meta({"backbone": "clip", "preset": "x"}) == BackboneSpec("clip", "x")


def test_clip_weights_are_pretrained_or_random():
    clip = BackboneSpec.parse("clip")
    assert clip.parse_weights("pretrained").mode == "imagenet" == clip.parse_weights(None).mode
    assert clip.parse_weights("random:3").seed == 3
    with pytest.raises(ImgsimError, match="Weights file not found: .*pretrained"):
        BackboneSpec.parse("resnet50").parse_weights("pretrained")


def test_poolings_and_dims_per_backbone():
    resnet, clip = BackboneSpec.parse("resnet50"), BackboneSpec.parse("clip")
    assert resnet.default_pooling() == "flatten" and clip.default_pooling() == "projection"
    assert resnet.check_pooling("avg") == "avg" and clip.check_pooling("projection") == "projection"
    with pytest.raises(ImgsimError, match=r"^CLIP has a single image embedding \('projection'\); --pooling flatten "
                                          r"applies to resnet50, efficientnet-lite0 only\.$"):
        clip.check_pooling("flatten")
    with pytest.raises(ImgsimError, match=r"--pooling max is not a pooling of any backbone\.$"):
        clip.check_pooling("max")
    with pytest.raises(ImgsimError, match="Unknown pooling 'projection'"):
        resnet.check_pooling("projection")
    assert default_dims(resnet, "flatten") == 100352 and default_dims(resnet, "avg") == 2048
    assert default_dims(clip, "projection") == 512
    assert default_dims(BackboneSpec.parse("clip:clip_vit_large_patch14"), "projection") == 768


def test_resnet50_is_a_backbone_whose_vectors_are_its_pooled_feature_maps(random_extractor):
    model = random_extractor
    assert isinstance(model, Backbone)
    assert (model.name, model.dims, model.pooling, model.supports_text) == ("resnet50", 100352, "flatten", False)
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model.embed(images), normalize(pool(model.feature_maps(images), "flatten")))
    with pytest.raises(TextSearchUnavailable, match="Text search needs a CLIP index"):
        model.embed_text("a tiger")


def test_capabilities_are_known_without_building_a_model():
    resnet = BackboneSpec.parse("resnet50").capabilities
    clip = BackboneSpec.parse("clip").capabilities
    large = BackboneSpec.parse("clip:clip_vit_large_patch14").capabilities
    assert (resnet.supports_text, resnet.feature_grid, resnet.poolings) == (False, (7, 7), {"flatten": 100352, "avg": 2048})
    assert (clip.supports_text, clip.feature_grid, clip.poolings, large.poolings) == (
        True, None, {"projection": 512}, {"projection": 768})
    assert (resnet.pretrained_weights, clip.pretrained_weights) == ("imagenet", "pretrained")
    assert (resnet.default_preset, clip.default_preset) == (None, "clip_vit_base_patch32")
    assert resnet.input_size == clip.input_size == (224, 224)
    # The resize filter: load_img's nearest for the reference; CLIP indexes were always built with the same.
    assert resnet.resample == clip.resample == "nearest"
    assert (resnet.runtimes, clip.runtimes) == (("auto", "openvino", "keras"), ())
    assert (resnet.precisions, clip.precisions) == (("float32", "float16"), ("float32",))
    for name in BACKBONES:  # every registered class names itself as registered and declares every capability
        cls = backbone_class(name)
        assert cls.name == name and isinstance(Capabilities.of(cls), Capabilities)


def test_reading_capabilities_imports_no_tensorflow():
    """The registry imports a backbone's module to read its class: that module must leave Keras for later."""
    import subprocess
    import sys

    code = ("import sys; from imgsim.models.base import BACKBONES, BackboneSpec\n"
            "caps = [BackboneSpec(name).capabilities for name in BACKBONES]\n"
            "print(sorted(m for m in ('keras', 'keras_hub', 'tensorflow') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_an_index_recording_an_unknown_backbone_says_which_ones_exist():
    spec = BackboneSpec.from_meta({"backbone": "vit"})
    with pytest.raises(ImgsimError, match=r"Unknown backbone 'vit': use resnet50, efficientnet-lite0, clip or clip:PRESET_OR_DIR"):
        spec.capabilities


def test_make_backbone_passes_runtime_and_precision_to_backbones_that_have_runtimes(monkeypatch):
    import imgsim.models.clip
    import imgsim.models.resnet50

    built = []

    class Recorder:
        def __init__(self, **options):
            built.append(options)

    for module, cls in ((imgsim.models.resnet50, "ResNet50Backbone"), (imgsim.models.clip, "ClipBackbone")):
        real = getattr(module, cls)
        monkeypatch.setattr(module, cls, type(cls, (Recorder,), {k: v for k, v in vars(real).items()
                                                                 if not k.startswith("__")}))
    make_backbone(BackboneSpec.parse("resnet50"), "random:2", "avg", None, runtime="keras", precision="float16")
    make_backbone(BackboneSpec.parse("clip:clip_vit_large_patch14"), "pretrained", runtime="keras", precision="float16")
    resnet, clip = built
    assert resnet["weights"].seed == 2 and (resnet["pooling"], resnet["batch_size"]) == ("avg", None)
    assert (resnet["runtime"], resnet["precision"]) == ("keras", "float16") and "preset" not in resnet
    assert clip["weights"].mode == "imagenet" and clip["pooling"] == "projection"
    assert clip["preset"] == "clip_vit_large_patch14" and "runtime" not in clip and "precision" not in clip


def test_make_backbone_checks_pooling_before_building_anything():
    with pytest.raises(ImgsimError, match="CLIP has a single image embedding"):
        make_backbone(BackboneSpec.parse("clip"), "random", "avg")


def test_text_search_help_names_the_command_that_builds_a_clip_index():
    message = text_search_help("resnet50", "/data/photos.imgsim")
    assert message.startswith("Text search needs a CLIP index: the index at /data/photos.imgsim was built with resnet50")
    assert "python -m imgsim index SRC_DIR --index /data/photos.imgsim-clip --backbone clip" in message
