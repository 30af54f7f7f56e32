"""CLIP from keras-hub: images and text into one space of unit vectors, for search by describing.

Pretrained weights come from a keras-hub preset (downloaded and cached on first use) or a local preset
folder made with ``save_to_preset``; ``--weights random`` builds the same ViT-B/32 architecture with
seeded random weights and a small byte-level BPE vocabulary made at run time, so everything runs offline
(similarities are then meaningless, and labelled so). keras-hub's ``get_vision_embeddings`` and
``get_text_embeddings`` return unnormalised projections: imgsim divides them by their L2 norm.
Images reach the model through the same 224x224 decode as ResNet50; ``CLIPImageConverter`` rescales and
normalises them with CLIP's mean and standard deviation.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.models.base import BACKBONES, TextEmbedding, backbone_class
from imgsim.models.embedding import MODEL_INPUT, check_images, embed_batches, normalize
from imgsim.models.native import device_name, filtered_native_stderr, import_keras, quiet_first_call
from imgsim.models.resnet50 import missing_weights_file
from imgsim.models.weights import (ResolvedWeights, Weights, WeightsError, download_failure, downloading,
                                   random_weights, sha256_file)

DEFAULT_PRESET = "clip_vit_base_patch32"
#: CLIP has one embedding per image: the projection of its class token.
POOLING = "projection"
#: clip_vit_base_patch32's architecture (151,277,363 parameters), used by --weights random.
VIT_B32 = {
    "vision": {"patch_size": 32, "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 3072,
               "image_shape": (224, 224, 3)},
    "text": {"vocabulary_size": 49408, "embedding_dim": 512, "hidden_dim": 512, "num_layers": 12, "num_heads": 8,
             "intermediate_dim": 2048, "max_sequence_length": 77},
    "projection_dim": 512,
}
#: CLIP's image normalisation (OpenAI's mean and standard deviation of RGB in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Words merged into whole tokens by the run-time vocabulary of random mode (the rest is spelt by bytes).
RANDOM_VOCAB_WORDS = ("a", "an", "the", "of", "on", "in", "at", "with", "and", "photo", "picture", "image",
                      "red", "green", "blue", "black", "white", "car", "bird", "tiger", "cat", "dog", "fish",
                      "flower", "fruit", "food", "coin", "night", "branch", "tree", "house", "person")
#: Projection sizes of the keras-hub CLIP presets (vector length without loading the model).
PRESET_DIMS = {"clip_vit_base_patch16": 512, "clip_vit_base_patch32": 512, "clip_vit_large_patch14": 768,
               "clip_vit_large_patch14_336": 768, "clip_vit_h_14_laion2b_s32b_b79k": 1024,
               "clip_vit_g_14_laion2b_s12b_b42k": 1024, "clip_vit_bigg_14_laion2b_39b_b160k": 1280}


def is_local_preset(preset: str) -> bool:
    """A preset given as a folder (any path separator, ``~`` or ``.``) rather than a keras-hub name."""
    return "/" in preset or preset.startswith((".", "~")) or Path(preset).expanduser().is_dir()


def preset_dims(preset: str | None) -> int:
    """The embedding size of a preset without building it (its config.json for a local folder)."""
    preset = preset or DEFAULT_PRESET
    if is_local_preset(preset):
        import json

        try:
            config = json.loads((Path(preset).expanduser() / "config.json").read_text(encoding="utf-8"))
            return int(config["config"]["projection_dim"])
        except (OSError, ValueError, KeyError, TypeError):
            return VIT_B32["projection_dim"]
    return PRESET_DIMS.get(preset, VIT_B32["projection_dim"])


def how_to_supply_clip_weights(preset: str = DEFAULT_PRESET, markdown: bool = False) -> str:
    """The instructions shown wherever CLIP weights are missing (plain text, or Markdown for the app)."""
    code = (lambda text: f"`{text}`") if markdown else (lambda text: text)
    script = (f"import keras_hub; p = '{preset}'; "
              "keras_hub.models.CLIPBackbone.from_preset(p).save_to_preset('clip_preset'); "
              "keras_hub.models.CLIPPreprocessor.from_preset(p).save_to_preset('clip_preset')")
    command = code(f'python -c "{script}"')
    return (
        f"To supply them offline, on a machine with internet access run\n"
        f"  {command}\n"
        f"then copy the clip_preset folder here and pass {code('--backbone clip:/path/to/clip_preset')} (CLI).\n"
        f"\nTo try text search without real weights, use {code('--weights random')} "
        "(seeded random weights: everything runs, but similarities are not meaningful)."
    )


class ClipWeightsError(WeightsError):
    """CLIP weights cannot be loaded; :meth:`how_to` says how to supply them."""

    def __init__(self, message: str, preset: str = DEFAULT_PRESET):
        super().__init__(message + "\n" + how_to_supply_clip_weights(preset))
        self.preset = preset

    def how_to(self, markdown: bool = False) -> str:
        return how_to_supply_clip_weights(self.preset, markdown)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters (the byte-level BPE alphabet)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}


def random_vocabulary(words: tuple[str, ...] = RANDOM_VOCAB_WORDS) -> tuple[dict[str, int], list[str]]:
    """A small byte-level BPE vocabulary and merges made at run time (random mode's tokenizer).

    Every byte is a token (alone and word-final), a few words are merged whole, and the start and end
    tokens come last: CLIP pools the text at the highest token id, which must be the end token.
    """
    alphabet = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for c in alphabet:
        vocab[c + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in words:
        parts = list(word)
        parts[-1] += "</w>"
        while len(parts) > 1:
            rule, token = f"{parts[0]} {parts[1]}", parts[0] + parts[1]
            if rule not in merges:
                merges.append(rule)
            vocab.setdefault(token, len(vocab))
            parts = [token] + parts[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


class ClipBackbone:
    """CLIP image and text embeddings (unit vectors) from a keras-hub preset, a local preset or random weights."""

    name = "clip"
    # Capabilities: what callers ask instead of the name (see imgsim.models.base.Capabilities).
    supports_text = True
    feature_grid = None
    default_pooling = POOLING
    pretrained_weights = "pretrained"
    default_preset = DEFAULT_PRESET
    input_size = MODEL_INPUT[:2]
    resample = "nearest"  # ResNet50's squash, which every CLIP index so far was built with
    runtimes: tuple[str, ...] = ()
    precisions = ("float32",)
    pretrained_load_stage = "model_load"  # keras-hub says what it downloads itself

    @classmethod
    def pooling_dims(cls, preset: str | None = None) -> dict[str, int]:
        """Its one embedding and that preset's projection size (read without building the model)."""
        return {POOLING: preset_dims(preset)}

    @classmethod
    def check_pooling(cls, pooling: str) -> str:
        """``projection``, or a message saying CLIP has no other (and which backbones have that one)."""
        if pooling != POOLING:
            others = [name for name in BACKBONES if pooling in backbone_class(name).pooling_dims()]
            where = f"applies to {', '.join(others)} only" if others else "is not a pooling of any backbone"
            raise ImgsimError(f"CLIP has a single image embedding ('{POOLING}'); --pooling {pooling} {where}.")
        return pooling

    @classmethod
    def parse_weights(cls, text: str | None) -> Weights:
        """``--weights`` for CLIP: ``pretrained`` (the preset's own, also ``imagenet``) or ``random[:SEED]``."""
        if text is not None and text.strip() == cls.pretrained_weights:
            text = "imagenet"  # Weights' name for "the model's published weights"
        # A weights *file* is ResNet50's (--weights PATH): a missing one gets the message it gets everywhere.
        return Weights.parse(text, missing_weights_file)

    def __init__(self, preset: str | None = None, weights: Weights | str | None = None, batch_size: int | None = 16,
                 arch: dict | None = None, download_timeout: float = 20.0, pooling: str = POOLING):
        """``batch_size=None`` means 16; ``arch`` replaces ViT-B/32 for random weights (small test models)."""
        self.pooling = self.check_pooling(pooling)
        batch_size = 16 if batch_size is None else batch_size
        if batch_size < 1:
            raise ImgsimError(f"Batch size must be at least 1 (got {batch_size}).")
        spec = weights if isinstance(weights, Weights) else self.parse_weights(weights)
        if spec.mode == "file":
            raise ImgsimError(f"For CLIP, --weights is pretrained (the preset's own) or random; give a "
                              f"local preset folder as --backbone clip:{spec.path} instead of --weights.")
        preset = (preset or DEFAULT_PRESET).strip()
        if is_local_preset(preset):
            preset = str(Path(preset).expanduser().resolve())
        self.batch_size = batch_size
        keras = import_keras()
        import keras_hub

        if spec.is_random:
            if preset != DEFAULT_PRESET:
                raise ImgsimError(f"--weights random builds the {DEFAULT_PRESET} architecture; leave out the "
                                  f"preset ({preset}) or use its real weights.")
            self.model, self.preprocessor = _random_clip(keras, keras_hub, spec.seed, arch or VIT_B32)
            vocab_size = self.preprocessor.tokenizer.vocabulary_size()
            self.weights = random_weights(
                spec.seed, f"random (seed {spec.seed}), tokenizer vocabulary of {vocab_size} tokens made at run "
                "time - similarities are not meaningful")
        else:
            self.model, self.preprocessor, weights_file = _load_preset(keras_hub, preset, download_timeout)
            where = f"local preset {preset}" if is_local_preset(preset) else f"keras-hub preset {preset}"
            self.weights = ResolvedWeights("pretrained", "sha256:" + sha256_file(weights_file), f"CLIP {where}",
                                           str(weights_file), None)
        self.preset = preset
        self.dims = int(self.model.projection_dim)
        self.max_tokens = int(self.preprocessor.sequence_length) - 2  # start and end tokens take two places
        self.device = device_name()
        # keras-hub builds the preprocessor (its token packer) on the first call, and two first calls at once
        # fail ("You cannot add new elements of state"): sessions' text queries are tokenised one at a time.
        self._text_lock = threading.Lock()
        self._image_fn, self._text_fn = self._make_forward()

    def _make_forward(self) -> tuple[Any, Any]:
        keras = import_keras()
        model, converter = self.model, self.preprocessor.image_converter
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Any square size: the converter resizes imgsim's 224x224 input to a 336 px preset's own size.
            image_fn = tf.function(lambda x: model.get_vision_embeddings(converter(x)), reduce_retracing=True,
                                   input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
            text_fn = tf.function(model.get_text_embeddings, reduce_retracing=True,
                                  input_signature=[tf.TensorSpec([None, None], tf.int32)])
            return (lambda x: image_fn(x).numpy()), quiet_first_call(lambda t: text_fn(t).numpy())
        return (lambda x: np.asarray(model.get_vision_embeddings(converter(x)))), (
            lambda t: np.asarray(model.get_text_embeddings(t)))

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit-length CLIP image embeddings ``(n, dims)`` for uint8 images ``(n, 224, 224, 3)``.

        Presets with another input size (``clip_vit_large_patch14_336``) get them resized by their own
        ``CLIPImageConverter``; images already at that size are taken as they are.
        """
        size = self.model.vision_encoder.image_shape[0]
        images = check_images(images, (MODEL_INPUT, (size, size, 3)))
        return embed_batches(images, self.batch_size, self.dims, self._image_fn)

    def count_tokens(self, text: str) -> int:
        """How many tokens the text becomes (without the start and end tokens)."""
        with self._text_lock:
            return int(np.asarray(self.preprocessor.tokenizer(text)).shape[0])

    def _detokenize(self, ids: np.ndarray) -> str:
        """Token ids back to text: CLIP marks word ends with ``</w>`` over a byte-level alphabet."""
        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        tokenizer = self.preprocessor.tokenizer
        joined = "".join(tokenizer.id_to_token(int(i)) for i in ids).replace("</w>", " ")
        return _from_byte_level(joined, to_byte)

    def embed_text(self, text: str) -> TextEmbedding:
        """The unit vector of a text query; longer texts are cut to the model's context (and say so)."""
        cleaned = " ".join(str(text).split())
        if not cleaned:
            raise ImgsimError("The text is empty: describe what you are looking for, e.g. \"a red car at night\".")
        with self._text_lock:
            ids = np.asarray(self.preprocessor.tokenizer(cleaned))
            tokens = np.asarray(self.preprocessor({"images": None, "prompts": [cleaned]})["token_ids"], dtype=np.int32)
        kept = cleaned
        if len(ids) > self.max_tokens:
            kept = self._detokenize(ids[:self.max_tokens])
        vector = normalize(self._text_fn(tokens).astype(np.float32))[0]
        return TextEmbedding(cleaned, vector, int(len(ids)), self.max_tokens, kept)


def _from_byte_level(joined: str, to_byte: dict[str, int]) -> str:
    words = [bytes(to_byte[c] for c in word if c in to_byte).decode("utf-8", "replace") for word in joined.split(" ")]
    return " ".join(w for w in words if w).strip()


def _random_clip(keras: Any, keras_hub: Any, seed: int, arch: dict) -> tuple[Any, Any]:
    """The CLIP architecture with seeded random weights, and a preprocessor with a run-time vocabulary."""
    with filtered_native_stderr():
        keras.utils.set_random_seed(seed)
        vision = keras_hub.models.CLIPVisionEncoder(**arch["vision"])
        text = keras_hub.models.CLIPTextEncoder(**arch["text"])
        model = keras_hub.models.CLIPBackbone(vision_encoder=vision, text_encoder=text,
                                              projection_dim=arch["projection_dim"])
        vocab, merges = random_vocabulary()
        tokenizer = keras_hub.models.CLIPTokenizer(vocabulary=vocab, merges=merges)
        size = arch["vision"]["image_shape"][:2]
        converter = keras_hub.layers.CLIPImageConverter(
            image_size=size, scale=[1.0 / (255.0 * s) for s in CLIP_STD],
            offset=[-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
        preprocessor = keras_hub.models.CLIPPreprocessor(tokenizer=tokenizer, image_converter=converter,
                                                         sequence_length=arch["text"]["max_sequence_length"])
    return model, preprocessor


def _load_preset(keras_hub: Any, preset: str, timeout: float) -> tuple[Any, Any, Path]:
    """Load a preset (local folder, or keras-hub name: downloaded and cached on first use)."""
    local = is_local_preset(preset)
    if local:
        folder = Path(preset)
        if not folder.is_dir():
            raise ClipWeightsError(f"CLIP preset folder not found: {folder}.")
        missing = [f for f in ("config.json", "model.weights.h5", "preprocessor.json") if not (folder / f).is_file()]
        if missing:
            raise ClipWeightsError(f"{folder} is not a complete CLIP preset: it lacks {', '.join(missing)} "
                                   "(save both the backbone and the preprocessor with save_to_preset).")
    else:
        info = getattr(keras_hub.models.CLIPBackbone, "presets", {}).get(preset)
        if info is None:
            raise ImgsimError(f"Unknown CLIP preset '{preset}'. keras-hub has: "
                              f"{', '.join(sorted(PRESET_DIMS))}; or give a local preset folder.")
        params = info.get("metadata", {}).get("params")
        size = f" ({params / 1e6:.0f}M parameters, about {params * 4 / 1e6:,.0f} MB)" if params else ""
        print(f"Loading CLIP preset {preset}{size}: keras-hub downloads it from Kaggle on first use and caches "
              "it for later runs.", file=sys.stderr)
    try:
        with downloading(timeout), filtered_native_stderr():
            model = keras_hub.models.CLIPBackbone.from_preset(preset)
            preprocessor = keras_hub.models.CLIPPreprocessor.from_preset(preset)
            if local:
                weights_file = Path(preset) / "model.weights.h5"
            else:
                from keras_hub.src.utils.preset_utils import get_file

                weights_file = Path(get_file(preset, "model.weights.h5"))
    except ImgsimError:
        raise
    except Exception as exc:  # keras-hub and kagglehub raise many types for a failed download or bad file
        what = f"the preset folder {preset} could not be loaded" if local else "the download failed"
        raise ClipWeightsError(f"CLIP weights for {preset} are not available: {what} "
                               f"({download_failure(exc)}).", preset if not local else DEFAULT_PRESET) from None
    return model, preprocessor, weights_file
