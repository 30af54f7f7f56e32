"""From images to unit vectors, for any backbone: the checked input, the batched loop, pooling, L2 normalisation,
and the pipeline that decodes files on threads ahead of the model (with its batch size and threads)."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from imgsim.errors import ImgsimError

#: What every backbone's ``embed`` takes: ``decode.model_input``'s 224x224 RGB.
MODEL_INPUT = (224, 224, 3)

T = TypeVar("T")

#: Images per model call by device: 16 saturates 2-4 CPU cores (bench/extract_speed.py); a GPU needs more
#: in flight. GPU sizes are chosen, not measured here (no GPU was at hand): they fit 8 GiB with room to spare.
BATCH_SIZES = {"CPU": 16, "GPU": {"float32": 64, "float16": 128}}


def default_batch_size(device: str, precision: str = "float32") -> int:
    """Images per model call for this device and precision."""
    size = BATCH_SIZES.get(device, 16)
    return size[precision] if isinstance(size, dict) else size


def default_workers(device: str) -> int:
    """Decoding threads: 2 keep ahead of a CPU model (the model is the slow part); a GPU needs every core."""
    return 2 if device == "CPU" else max(2, min(16, os.cpu_count() or 2))


def check_images(images: np.ndarray, shapes: tuple[tuple[int, int, int], ...] = (MODEL_INPUT,)) -> np.ndarray:
    """``images`` as an array of shape ``(n, *shape)`` for one of ``shapes``, else a ValueError naming 224x224."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] not in shapes:
        raise ValueError(f"expected images of shape (n, 224, 224, 3), got {images.shape}")
    return images


def embed_batches(images: np.ndarray, batch_size: int, dims: int,
                  vectors: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Unit vectors ``(n, dims)`` float32: ``vectors`` maps each float32 batch of at most ``batch_size`` images
    to its raw ``(len(batch), dims)`` outputs, which are then divided by their L2 norm."""
    out = np.empty((len(images), dims), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].astype(np.float32)
        out[start:start + len(chunk)] = vectors(chunk)
    return normalize(out)


def pool(maps: np.ndarray, pooling: str) -> np.ndarray:
    """Reduce ``(n, rows, cols, channels)`` feature maps: ``flatten`` keeps every value in (h, w, c) order,
    ``avg`` is the mean over the grid."""
    if pooling == "flatten":
        return maps.reshape(len(maps), -1)
    return maps.mean(axis=(1, 2))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def extract_pipelined(embed: Callable[[np.ndarray], np.ndarray], items: Iterable[T],
                      load: Callable[[T], Any], batch_size: int, workers: int = 2) -> Iterator[tuple[T, Any]]:
    """Run ``load`` on a thread pool ahead of the model and yield ``(item, outcome)`` pairs.

    ``load`` returns a 224x224x3 uint8 array (sent to the model in batches; the outcome is its vector)
    or any other value (passed through). An :class:`ImgsimError` it raises becomes the outcome, so one bad
    file never stops the run. Decoding of the next batches overlaps the model's work on this one.
    """

    def guarded(item: T) -> Any:
        try:
            return load(item)
        except ImgsimError as exc:
            return exc

    lookahead = max(2 * batch_size, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgsim-decode") as pool_:
        source = iter(items)
        futures: deque = deque()
        batch: list[tuple[T, np.ndarray]] = []

        def top_up() -> None:
            while len(futures) < lookahead:
                try:
                    item = next(source)
                except StopIteration:
                    return
                futures.append((item, pool_.submit(guarded, item)))

        def flush() -> Iterator[tuple[T, Any]]:
            vectors = embed(np.stack([arr for _, arr in batch]))
            done = [(item, vec) for (item, _), vec in zip(batch, vectors)]
            batch.clear()
            yield from done

        top_up()
        while futures:
            item, future = futures.popleft()
            outcome = future.result()
            top_up()
            if isinstance(outcome, np.ndarray):
                batch.append((item, outcome))
                if len(batch) >= batch_size:
                    yield from flush()
            else:
                yield item, outcome
        if batch:
            yield from flush()
