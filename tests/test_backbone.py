"""The backbone interface: parsing --backbone, ResNet50 through the interface, dims without a model."""

from __future__ import annotations

import numpy as np
import pytest

from imgsim.models.base import (Backbone, BackboneSpec, ResNet50Backbone, TextSearchUnavailable, default_dims,
                             make_backbone, text_search_help)
from imgsim.errors import ImgsimError


@pytest.mark.parametrize("text, name, preset", [
    (None, "resnet50", None), ("resnet50", "resnet50", None), (" CLIP ", "clip", None),
    ("clip:clip_vit_large_patch14", "clip", "clip_vit_large_patch14"), ("clip:/models/my preset", "clip", "/models/my preset"),
])
def test_backbone_spec_parses_names_and_presets(text, name, preset):
    spec = BackboneSpec.parse(text)
    assert (spec.name, spec.preset) == (name, preset)
    assert BackboneSpec.parse(spec.spec) == spec
    assert spec.supports_text == (name == "clip")


def test_backbone_spec_refuses_unknown_names_with_the_choices():
    with pytest.raises(ImgsimError, match=r"Unknown backbone 'vit': use resnet50, clip or clip:PRESET_OR_DIR"):
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
    with pytest.raises(ImgsimError, match="CLIP has a single image embedding"):
        clip.check_pooling("flatten")
    with pytest.raises(ImgsimError, match="Unknown pooling 'projection'"):
        resnet.check_pooling("projection")
    assert default_dims(resnet, "flatten") == 100352 and default_dims(resnet, "avg") == 2048
    assert default_dims(clip, "projection") == 512
    assert default_dims(BackboneSpec.parse("clip:clip_vit_large_patch14"), "projection") == 768


def test_resnet50_through_the_interface_gives_the_extractor_vectors(random_extractor):
    wrapped = ResNet50Backbone(random_extractor)
    assert isinstance(wrapped, Backbone)
    assert (wrapped.name, wrapped.dims, wrapped.pooling, wrapped.supports_text) == ("resnet50", 100352, "flatten", False)
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wrapped.embed(images), random_extractor.embed(images))
    with pytest.raises(TextSearchUnavailable, match="Text search needs a CLIP index"):
        wrapped.embed_text("a tiger")


def test_make_backbone_checks_pooling_before_building_anything():
    with pytest.raises(ImgsimError, match="CLIP has a single image embedding"):
        make_backbone(BackboneSpec.parse("clip"), "random", "avg")


def test_text_search_help_names_the_command_that_builds_a_clip_index():
    message = text_search_help("resnet50", "/data/photos.imgsim")
    assert message.startswith("Text search needs a CLIP index: the index at /data/photos.imgsim was built with resnet50")
    assert "python -m imgsim index SRC_DIR --index /data/photos.imgsim-clip --backbone clip" in message
