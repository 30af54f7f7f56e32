"""Feature extraction: faithful to the reference per-image path, weights handling, pipelining."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from imgsim import decode
from imgsim.models import embedding, native
from imgsim.models import resnet50 as extract
from imgsim.errors import ImgsimError, SkipReason
from imgsim.models.embedding import extract_pipelined
from imgsim.models.resnet50 import ResNet50Backbone
from imgsim.models.weights import Weights, WeightsError

from .conftest import make_photo, reference_vector


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    return [make_photo(root / f"p{i}.jpg", seed=40 + i, size=(200 + 13 * i, 150)) for i in range(6)]


def test_batched_flatten_vectors_equal_reference_per_image_path(random_extractor, photos):
    batch = np.stack([decode.model_input(p.read_bytes()) for p in photos])
    ours = random_extractor.embed(batch)
    assert ours.shape == (len(photos), 100352) and ours.dtype == np.float32
    ref = np.stack([reference_vector(random_extractor.model, p) for p in photos])
    assert np.abs(ours - ref).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_avg_pooling_equals_keras_pooling_avg_model(photos):
    import keras

    ours = ResNet50Backbone("random:3", "avg", batch_size=4)
    keras.utils.set_random_seed(3)
    ref_model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3), pooling="avg")
    batch = np.stack([decode.model_input(p.read_bytes()) for p in photos[:3]])
    ref = ref_model.predict(keras.applications.resnet50.preprocess_input(batch.astype(np.float32)), verbose=0)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = ours.embed(batch)
    assert got.shape == (3, 2048)
    assert np.abs(got - ref).max() <= 1e-4


def test_random_weights_are_seeded_and_labelled(random_extractor):
    assert random_extractor.weights.identity == "random:0"
    assert random_extractor.weights.label == "random (seed 0) - similarities are not meaningful"
    assert random_extractor.device == "CPU"
    other = extract.build_resnet50(extract.resolve_weights(Weights.parse("random")))
    for a, b in zip(random_extractor.model.get_weights()[:5], other.get_weights()[:5]):
        np.testing.assert_array_equal(a, b)


def _write_legacy_weights(model, path) -> None:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A weights file in the Keras no-top .h5 format, holding the seed-5 random weights."""
    path = tmp_path_factory.mktemp("w") / extract.WEIGHTS_FILE
    _write_legacy_weights(extract.build_resnet50(extract.resolve_weights(Weights.parse("random:5"))), path)
    return path


def test_local_weights_file_is_loaded_and_identified_by_hash(weights_file, photos):
    from_file = ResNet50Backbone(str(weights_file), "avg")
    seeded = ResNet50Backbone("random:5", "avg")
    batch = np.stack([decode.model_input(photos[0].read_bytes())])
    np.testing.assert_allclose(from_file.embed(batch), seeded.embed(batch), atol=1e-6)
    assert from_file.weights.mode == "file"
    assert from_file.weights.identity.startswith("sha256:") and len(from_file.weights.identity) == 7 + 64
    assert from_file.weights.label == f"file {extract.WEIGHTS_FILE}"


def test_imagenet_uses_the_standard_keras_download_and_cache(monkeypatch, weights_file, tmp_path):
    calls = []

    def fake_get_file(fname, origin, cache_subdir, file_hash):
        calls.append((fname, origin, cache_subdir, file_hash))
        return str(weights_file)

    keras = native.import_keras()
    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    model = ResNet50Backbone("imagenet", "avg")
    assert calls == [(extract.WEIGHTS_FILE, extract.WEIGHTS_URL, "models", extract.WEIGHTS_MD5)]
    assert model.weights.label == "ImageNet (Keras)" and not model.weights.is_random


def test_imagenet_unavailable_fails_fast_with_instructions(monkeypatch, tmp_path):
    keras = native.import_keras()

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    with pytest.raises(WeightsError) as info:
        ResNet50Backbone("imagenet")
    message = str(info.value)
    expected_path = tmp_path / "kh" / "models" / extract.WEIGHTS_FILE
    assert message.startswith(f"ImageNet weights for ResNet50 are not available: {expected_path} does not exist")
    assert "Temporary failure in name resolution" in message
    assert extract.WEIGHTS_URL in message
    assert f"put the file at {expected_path}" in message
    assert f"--weights /path/to/{extract.WEIGHTS_FILE}" in message
    assert f"IMGSIM_WEIGHTS=/path/to/{extract.WEIGHTS_FILE}" in message
    assert "IMGSIM_WEIGHTS=random" in message


def test_a_damaged_file_in_the_keras_cache_is_named_as_such_not_as_missing(monkeypatch, tmp_path):
    """Keras re-downloads a cached file whose MD5 is wrong and deletes it when that fails: the message must
    not tell the person who just copied it there that it does not exist."""
    keras = native.import_keras()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    cached = extract.keras_cache_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")

    def offline(*args, **kwargs):
        cached.unlink()  # what keras.utils.get_file does with it when the new download fails
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(WeightsError) as info:
        ResNet50Backbone("imagenet")
    message = str(info.value)
    assert message.startswith(
        f"ImageNet weights for ResNet50 are not available: {cached} was incomplete or not the right file (its MD5 "
        f"is not {extract.WEIGHTS_MD5}), so Keras removed it to download it again, and the download failed (")
    assert "Temporary failure in name resolution).\nTo supply them offline, download " in message


@pytest.mark.parametrize("text, match", [
    ("random:abc", "Invalid weights 'random:abc': write random or random:SEED with a whole number."),
    ("/no/such/weights.h5", "Weights file not found: /no/such/weights.h5. Use imagenet, random, or the path"),
])
def test_bad_weights_settings_say_what_to_change(text, match):
    with pytest.raises(WeightsError, match=match.replace(".", r"\.").replace("(", r"\(")):
        ResNet50Backbone.parse_weights(text)


def test_wrong_weights_file_is_refused_with_message(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match=r"Could not load ResNet50 weights from .*bad\.h5"):
        ResNet50Backbone(str(bad))


def test_unknown_pooling_and_batch_size_are_refused():
    with pytest.raises(ImgsimError, match="Unknown pooling 'max': use one of flatten, avg."):
        ResNet50Backbone("random", "max")
    with pytest.raises(ImgsimError, match=r"Batch size must be at least 1 \(got 0\)."):
        ResNet50Backbone("random", "avg", batch_size=0)


def test_pipeline_keeps_items_aligned_and_passes_errors_through():
    """Decoding runs on worker threads; failures come back as values next to their item."""
    loader_threads = set()

    def load(i: int):
        loader_threads.add(threading.current_thread().name)
        if i % 4 == 3:
            raise decode.DecodeError(SkipReason.CORRUPT, f"item {i}")
        if i % 5 == 0:
            return "pass-through"
        return np.full((224, 224, 3), i, dtype=np.uint8)

    def embed(batch: np.ndarray) -> np.ndarray:
        assert len(batch) <= 3
        return batch[:, 0, 0, :1].astype(np.float32)  # the vector is the item's own number

    out = dict(extract_pipelined(embed, range(20), load, batch_size=3, workers=2))
    assert sorted(out) == list(range(20))
    for i, outcome in out.items():
        if i % 4 == 3:
            assert isinstance(outcome, decode.DecodeError) and outcome.detail == f"item {i}"
        elif i % 5 == 0:
            assert outcome == "pass-through"
        else:
            assert outcome[0] == i
    assert all(name.startswith("imgsim-decode") for name in loader_threads)


def test_pooling_and_normalize_helpers():
    maps = np.arange(2 * 7 * 7 * 2048, dtype=np.float32).reshape(2, 7, 7, 2048)
    assert extract.pool(maps, "flatten").shape == (2, 100352)
    np.testing.assert_array_equal(extract.pool(maps, "flatten")[1], maps[1].ravel())
    np.testing.assert_allclose(extract.pool(maps, "avg"), maps.mean(axis=(1, 2)))
    z = embedding.normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(z, [[0.6, 0.8], [0.0, 0.0]])


def test_float32_means_float32_on_gpus_too():
    """TensorFlow's default TensorFloat-32 rounds float32 convolutions to a 10-bit mantissa on Ampere+ GPUs,
    which would make a GPU-built index differ from the reference (and from a CPU-built one) like float16."""
    native.import_keras()
    import tensorflow as tf

    assert tf.config.experimental.tensor_float_32_execution_enabled() is False


def test_the_keras_cache_path_is_where_keras_looks_when_home_cannot_be_written(monkeypatch, tmp_path):
    """keras.utils.get_file uses /tmp/.keras when the Keras home is not writable: the instructions must name
    that folder, or a file put where they say is never found."""
    import os

    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    assert extract.keras_cache_path() == home / ".keras" / "models" / extract.WEIGHTS_FILE
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(str(home)) else
                        real_access(path, mode))
    assert extract.keras_cache_path() == Path("/tmp/.keras/models") / extract.WEIGHTS_FILE
    monkeypatch.setenv("KERAS_HOME", str(home / ".keras"))
    assert extract.keras_cache_path() == Path("/tmp/.keras/models") / extract.WEIGHTS_FILE


def test_a_gpu_that_tensorflow_sees_gets_memory_growth_first_and_the_keras_forward_pass(monkeypatch):
    """No GPU here: TensorFlow is told it has one, to check what imgsim does with it (it never needs one)."""
    import tensorflow as tf

    native.import_keras()
    fake_gpu = tf.config.list_physical_devices("CPU")[0]
    real_list = tf.config.list_physical_devices
    grown = []
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [fake_gpu] if kind == "GPU" else real_list(kind))
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda dev, on: grown.append((dev, on)))
    monkeypatch.setattr(native, "_KERAS", None)  # a fresh process' first import
    native.import_keras()
    assert grown == [(fake_gpu, True)]
    model = ResNet50Backbone("random", "avg", batch_size=None)
    assert (model.device, model.runtime, model.batch_size) == ("GPU", "keras (tensorflow)", 64)
    assert grown == [(fake_gpu, True)]  # set once, before the model was built
