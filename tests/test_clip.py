"""CLIP (keras-hub) backbone: faithful mechanics with random weights, text limits, presets, and a CLIP index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgsim.models import clip
from imgsim.models.base import TextSearchUnavailable
from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.errors import ImgsimError
from imgsim.models.weights import WeightsError

from .conftest import make_photo

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "vision": {"patch_size": 16, "hidden_dim": 32, "num_layers": 1, "num_heads": 2, "intermediate_dim": 64,
               "image_shape": (224, 224, 3)},
    "text": {"vocabulary_size": 700, "embedding_dim": 32, "hidden_dim": 32, "num_layers": 1, "num_heads": 2,
             "intermediate_dim": 64, "max_sequence_length": 77},
    "projection_dim": 24,
}


def test_random_clip_has_the_vit_b32_architecture_and_says_it_is_random(random_clip):
    assert random_clip.model.count_params() == 151_277_363  # keras-hub's clip_vit_base_patch32 metadata
    assert random_clip.dims == 512 and random_clip.max_tokens == 75
    assert random_clip.weights.is_random and random_clip.weights.identity == "random:0"
    assert "random" in random_clip.weights.label and "made at run time" in random_clip.weights.label


def test_image_embeddings_are_unit_vectors_equal_to_normalised_keras_hub_projections(random_clip):
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    got = random_clip.embed(images)
    raw = np.asarray(random_clip.model.get_vision_embeddings(
        random_clip.preprocessor.image_converter(images.astype(np.float32))))
    assert got.shape == (3, 512) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # keras-hub does not normalise: imgsim must
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match="expected images of shape"):
        random_clip.embed(images[:, :100])


def test_same_text_gives_the_same_vector_and_different_text_another(random_clip):
    a = random_clip.embed_text("a tiger")
    b = random_clip.embed_text("  a   tiger ")
    c = random_clip.embed_text("a red car")
    np.testing.assert_array_equal(a.vector, b.vector)
    assert a.text == b.text == "a tiger" and a.tokens == 2 and not a.truncated and a.note == ""
    assert abs(float(np.linalg.norm(a.vector)) - 1.0) < 1e-5
    assert float(a.vector @ c.vector) < 0.999


def test_long_text_is_truncated_with_a_note_and_empty_text_is_refused(random_clip):
    text = "a tiger on a branch " * 30
    long = random_clip.embed_text(text)
    n = random_clip.count_tokens(text)
    assert n > 100 and long.truncated and long.tokens == n and long.max_tokens == 75
    assert long.note.startswith(f"The text is {n} tokens long; CLIP reads at most 75, so only the beginning was used")
    assert long.kept.startswith("a tiger on a branch a tiger") and text.startswith(long.kept)
    assert random_clip.count_tokens(long.kept) in (75, 76)  # a word cut in the middle may re-tokenise once more
    exactly = "a tiger " * 37 + "a"  # 75 tokens: the most that fits
    assert random_clip.count_tokens(exactly) == 75 and not random_clip.embed_text(exactly).truncated
    assert random_clip.embed_text(exactly + " tiger").truncated
    # Everything past the limit is ignored: another tail gives the same vector.
    other_tail = random_clip.embed_text("a tiger on a branch " * 30 + "and a completely different ending")
    np.testing.assert_array_equal(long.vector, other_tail.vector)
    for empty in ("", "   ", "\n\t"):
        with pytest.raises(ImgsimError, match="The text is empty: describe what you are looking for"):
            random_clip.embed_text(empty)


def test_random_vocabulary_ends_with_start_and_end_tokens():
    vocab, merges = clip.random_vocabulary()
    assert vocab["<|endoftext|>"] == max(vocab.values()) == len(vocab) - 1  # CLIP pools at the highest id
    assert vocab["<|startoftext|>"] == len(vocab) - 2
    assert "tiger</w>" in vocab and "t i" in merges and len(set(vocab.values())) == len(vocab)


def test_a_text_query_returns_the_image_built_to_match_it(tmp_path, photo_dir, random_clip):
    """A tiny synthetic case: one image's stored vector is the text vector of "a tiger"."""
    folder = tmp_path / "planted"
    for i in range(6):
        make_photo(folder / f"p{i}.jpg", seed=300 + i)
    from PIL import Image

    Image.new("RGB", (64, 64), (255, 128, 0)).save(folder / "the_tiger.png")
    target = random_clip.embed_text("a tiger").vector

    class Planted:
        """The real random CLIP, except that the orange image is given the text's vector."""

        def __getattr__(self, name):
            return getattr(random_clip, name)

        def embed(self, images):
            out = random_clip.embed(images)
            for i, im in enumerate(images):
                if np.all(im == (255, 128, 0)):
                    out[i] = target
            return out

    index = tmp_path / "planted.imgsim"
    build_index(folder, index, weights="random", backbone="clip", model_factory=lambda w, p, b: Planted())
    col = Collection.open(index)
    result, embedded = col.query_text("a tiger", 3, model=lambda: random_clip)
    assert result.neighbors[0].path == "the_tiger.png"
    assert result.neighbors[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert result.neighbors[0].distance == pytest.approx(0.0, abs=2e-3)
    assert [n.distance for n in result.neighbors] == sorted(n.distance for n in result.neighbors)
    other, _ = col.query_text("a red car", 7, model=lambda: random_clip)
    assert all(n.similarity < 0.999 for n in other.neighbors)


def test_clip_index_records_backbone_preset_and_weights(clip_index):
    col = Collection.open(clip_index)
    meta = col.index.meta
    assert meta["backbone"] == "clip" and meta["preset"] == "clip_vit_base_patch32"
    assert meta["pooling"] == "projection" and col.index.dims == 512
    assert meta["weights"]["identity"] == "random:0" and col.is_random
    assert col.supports_text and col.backbone.spec == "clip:clip_vit_base_patch32"
    np.testing.assert_allclose(np.linalg.norm(col.index.vectors, axis=1), 1.0, atol=1e-5)


def test_map_duplicates_evaluate_and_image_queries_work_on_a_clip_index(clip_index, photo_dir, random_clip):
    col = Collection.open(clip_index)
    assert col.map_xy().shape == (col.count, 2) and np.isfinite(col.map_xy()).all()
    groups = col.duplicate_groups(2.0)
    assert sum(len(g.rows) for g in groups) == col.count  # everything is within 2 of everything
    ev = col.evaluate(3)
    assert ev.queries == 11 and 0.0 <= ev.precision_at_k <= 1.0
    first = col.neighbors_of_row(0, 4)
    assert first.neighbors[0].row == 0 and first.neighbors[0].distance == 0.0
    upload = make_photo(photo_dir.parent / "clip-upload.jpg", seed=4242)
    result = col.query_file(upload, 4, extractor=lambda: random_clip)
    assert result.row is None and len(result.neighbors) == 4
    vec = random_clip.embed(__import__("imgsim.decode", fromlist=["x"]).model_input(upload.read_bytes())[None])[0]
    expected = col.neighbors_of_vector(vec, 4)
    assert [n.path for n in result.neighbors] == [n.path for n in expected.neighbors]


def test_a_clip_query_is_never_embedded_with_another_model(clip_index, built_index, random_extractor, random_clip):
    from imgsim.collection import check_compatible

    with pytest.raises(ImgsimError, match="the index was built with clip:clip_vit_base_patch32"):
        check_compatible(Collection.open(clip_index), random_extractor)
    with pytest.raises(ImgsimError, match="The model is clip but the index was built with resnet50"):
        check_compatible(Collection.open(built_index), random_clip)


def test_text_query_on_a_resnet50_index_says_how_to_build_a_clip_index(built_index):
    col = Collection.open(built_index)
    assert not col.supports_text
    with pytest.raises(TextSearchUnavailable, match=r"Text search needs a CLIP index: the index at .* was built "
                                                    r"with resnet50") as info:
        col.query_text("a tiger", 5)
    assert "--backbone clip" in str(info.value) and "--weights random" in str(info.value)


def test_changing_the_backbone_of_an_index_needs_rebuild(clip_index, photo_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy.imgsim"
    shutil.copytree(clip_index, copy)
    with pytest.raises(ImgsimError, match="built with the clip:clip_vit_base_patch32 backbone .asked: resnet50."):
        build_index(photo_dir, copy, backbone="resnet50")
    with pytest.raises(ImgsimError, match="single image embedding"):
        build_index(photo_dir, tmp_path / "new.imgsim", backbone="clip", pooling="avg")
    with pytest.raises(ImgsimError, match="Unknown backbone 'vgg16'"):
        build_index(photo_dir, tmp_path / "new.imgsim", backbone="vgg16")
    # An unchanged folder with the index's own backbone (asked or not) is a no-op.
    assert not build_index(photo_dir, copy, backbone="clip").committed
    assert not build_index(photo_dir, copy).committed


def test_first_text_queries_of_two_sessions_at_once_both_get_their_vector(monkeypatch):
    """keras-hub builds CLIP's preprocessor on its first call: two sessions' first queries right after start
    both built it, and one failed ("You cannot add new elements of state ... already built")."""
    import threading
    import time

    from keras_hub.src.models.clip import clip_preprocessor

    model = clip.ClipBackbone(None, "random", arch=TINY)  # a fresh model: its preprocessor is not built yet
    real_packer = clip_preprocessor.StartEndPacker

    def slow_packer(*args, **kwargs):  # widens the window in which a second call also finds it unbuilt
        time.sleep(0.3)
        return real_packer(*args, **kwargs)

    monkeypatch.setattr(clip_preprocessor, "StartEndPacker", slow_packer)
    start = threading.Barrier(4)
    vectors, errors = {}, []

    def first_query(i: int) -> None:
        start.wait()
        try:
            vectors[i] = model.embed_text("a tiger").vector
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a session would have logged
            errors.append(exc)

    threads = [threading.Thread(target=first_query, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(vectors) == 4
    for vector in vectors.values():
        np.testing.assert_array_equal(vector, vectors[0])


def test_a_preset_with_336_px_input_embeds_the_224_px_model_input():
    """clip_vit_large_patch14_336 is offered; every image reaches a backbone as 224x224 (decode.model_input),
    so its own converter must resize it instead of embed() refusing every batch."""
    arch = {**TINY, "vision": {**TINY["vision"], "image_shape": (336, 336, 3)}}
    model = clip.ClipBackbone(None, "random", arch=arch)
    images = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    got = model.embed(images)
    raw = np.asarray(model.model.get_vision_embeddings(model.preprocessor.image_converter(images.astype(np.float32))))
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 224, 224, 3\)"):
        model.embed(images[:, :100])


def test_local_preset_folder_loads_offline_and_gives_the_same_vectors(tmp_path):
    """save_to_preset elsewhere, copy the folder, --backbone clip:DIR: same embeddings, recorded by hash."""
    made = clip.ClipBackbone(None, "random", arch=TINY)
    folder = tmp_path / "clip_preset"
    made.model.save_to_preset(str(folder))
    made.preprocessor.save_to_preset(str(folder))
    loaded = clip.ClipBackbone(str(folder), "imagenet")
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.embed(images), made.embed(images), atol=1e-5)
    np.testing.assert_allclose(loaded.embed_text("a tiger").vector, made.embed_text("a tiger").vector, atol=1e-5)
    assert loaded.weights.mode == "pretrained" and loaded.weights.identity.startswith("sha256:")
    assert loaded.preset == str(folder.resolve()) and loaded.dims == 24 and clip.preset_dims(str(folder)) == 24
    assert "local preset" in loaded.weights.label


def test_missing_clip_weights_give_instructions_not_a_traceback(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="CLIP preset folder not found") as info:
        clip.ClipBackbone(str(tmp_path / "nowhere"), "imagenet")
    assert "save_to_preset" in str(info.value) and "--backbone clip:/path/to/clip_preset" in str(info.value)
    assert "`--weights random`" in info.value.how_to(markdown=True)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="not a complete CLIP preset: it lacks model.weights.h5, preprocessor.json"):
        clip.ClipBackbone(str(tmp_path / "half"), "imagenet")
    with pytest.raises(ImgsimError, match="give a local preset folder as --backbone clip:"):
        clip.ClipBackbone(None, str(tmp_path / "half" / "config.json"))

    import keras_hub

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras_hub.models.CLIPBackbone, "from_preset", offline)
    with pytest.raises(WeightsError, match=r"CLIP weights for clip_vit_base_patch32 are not available: the download "
                                           r"failed \(\[Errno -3\] Temporary failure in name resolution\)"):
        clip.ClipBackbone(None, "imagenet")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgsim", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "IMGSIM_WEIGHTS": ""})


def test_cli_text_query_prints_k_neighbours_as_json(clip_index, built_index):
    run = _cli("query", str(clip_index), "--text", "a tiger", "-k", "5", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["query"] == {"text": "a tiger"} and data["random_weights"] is True and data["k"] == 5
    paths = [n["path"] for n in data["neighbors"]]
    assert len(paths) == 5 and all(not p.startswith("/") for p in paths)
    distances = [n["distance"] for n in data["neighbors"]]
    assert distances == sorted(distances)
    for n in data["neighbors"]:
        assert n["similarity"] == pytest.approx(1 - n["distance"] ** 2 / 2, abs=1e-5)

    assert "oneDNN" not in run.stderr, run.stderr  # TensorFlow's DT_INT64 note on the first text query

    run = _cli("query", str(built_index), "--text", "a tiger")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    root = os.path.realpath(Collection.open(built_index).index.root)
    assert run.stderr == (
        f"error: Text search needs a CLIP index: the index at {built_index} was built with resnet50, which only "
        f"compares images. Build a CLIP index of the same folder with\n"
        f"  python -m imgsim index {root} --index {built_index}-clip --backbone clip\n"
        f"(add --weights random to try it without downloading CLIP), then query it with --text.\n")
    run = _cli("query", str(clip_index), "--text", "   ")
    assert run.returncode == 1 and "error: The text is empty" in run.stderr
    run = _cli("query", str(clip_index))
    assert run.returncode == 1 and "Give an IMAGE_PATH to search with, or --text" in run.stderr
    info = json.loads(_cli("info", str(clip_index), "--json").stdout)
    assert info["backbone"] == "clip" and info["preset"] == "clip_vit_base_patch32" and info["dims"] == 512


def test_the_native_filter_drops_tensorflows_onednn_int64_note_and_keeps_real_errors(capfd):
    """A CLIP text query's first run logs this line at E level: TensorFlow then runs the ops with Eigen."""
    from imgsim.models import native

    note = ("E0000 00:00:1796124110.628491   11336 util.cc:131] oneDNN supports DT_INT64 only on platforms with "
            "AVX-512. Falling back to the default Eigen-based implementation if present.")
    error = "E0000 00:00:1796124110.628491   11336 op_kernel.cc:1857] OP_REQUIRES failed: Out of memory"
    assert native.is_noise(note) and not native.is_noise(error)
    capfd.readouterr()
    with native.filtered_native_stderr():
        os.write(2, f"{note}\n{error}\n".encode())
    assert capfd.readouterr().err == error + "\n"


def test_text_vector_is_keras_hub_text_encoder_pooler_and_projection_normalised(random_clip):
    """Not circular: keras-hub's own layers called one by one, eagerly, and its CLIP head's logits."""
    text = "a photo of a red car at night"
    got = random_clip.embed_text(text).vector
    tokens = np.asarray(random_clip.preprocessor({"images": None, "prompts": [text]})["token_ids"], dtype=np.int32)
    tokenizer = random_clip.preprocessor.tokenizer
    ids = np.asarray(tokenizer(text))
    assert tokens.shape == (1, 77) and list(tokens[0, :len(ids) + 2]) == [
        tokenizer.token_to_id("<|startoftext|>"), *ids, tokenizer.token_to_id("<|endoftext|>")]
    model = random_clip.model
    raw = np.asarray(model.text_projection(model.text_pooler(model.text_encoder({"token_ids": tokens}), tokens)))[0]
    assert got.shape == (512,) and got.dtype == np.float32
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw), atol=1e-5)
    # keras-hub's whole CLIPBackbone (the functional model): its text-to-image logits are the cosine of our
    # text vector with our image vector, times its learnt scale.
    image = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    pixels = np.asarray(random_clip.preprocessor.image_converter(image.astype(np.float32)))
    logits = model.predict({"images": pixels, "token_ids": tokens}, verbose=0)["text_logits"]
    scale = float(np.exp(np.asarray(model.clip_head.logit_scale)))
    assert float(np.asarray(logits)[0, 0]) / scale == pytest.approx(float(got @ random_clip.embed(image)[0]), abs=1e-5)
