"""Keras and TensorFlow as a process sees them: one import with the GPU set up, the device, and their native output.

TensorFlow, OpenVINO and keras-hub print from C++ straight to file descriptors 1 and 2, where Python's
``redirect_stdout`` cannot reach: the contexts here swap the descriptors themselves, one swap at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Any, Callable, Iterator

#: Held while fds 1/2 are swapped: swaps from two threads (the app's indexing job and an upload) would
#: otherwise restore each other's temporary fd.
NATIVE_OUTPUT_LOCK = threading.RLock()

# Native log lines TensorFlow prints on import, device probing and a graph's first run that say nothing
# actionable (oneDNN's DT_INT64 note is logged as an error, but TensorFlow just runs those ops with Eigen).
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IW]\d{4} |E\d{4} .*(cuInit|cuda_platform|cuda_dnn|"
    r"cuda_blas|cuda_fft|oneDNN supports DT_\w+ only on platforms with)|To enable the following instructions|"
    r".*rebuild TensorFlow with the appropriate)")


def is_noise(line: str) -> bool:
    """True for a native log line :func:`filtered_native_stderr` drops."""
    return bool(_NOISE.match(line))


@contextlib.contextmanager
def _fds_to(target: int, fds: tuple[int, ...]) -> Iterator[None]:
    """Point ``fds`` at the open file ``target`` while the block runs, then back (the one fd swap)."""
    with NATIVE_OUTPUT_LOCK:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(target, fd)
            yield
        finally:
            for fd, copy in zip(fds, saved):
                os.dup2(copy, fd)
                os.close(copy)


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Hide TensorFlow's start-up chatter on fd 2 while keeping any real error it prints."""
    with NATIVE_OUTPUT_LOCK, tempfile.TemporaryFile() as capture:
        try:
            with _fds_to(capture.fileno(), (2,)):
                yield
        finally:  # fd 2 is back: what was worth seeing goes there now
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if not is_noise(line):
                    sys.stderr.write(line + "\n")


def quiet_first_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its first call under :func:`filtered_native_stderr`: a ``tf.function`` builds and optimises
    its graph then, and TensorFlow's graph passes log their notes to fd 2 (later calls print nothing)."""
    first = threading.Event()

    def call(*args: Any) -> Any:
        if first.is_set():
            return fn(*args)
        with filtered_native_stderr():
            out = fn(*args)
        first.set()
        return out
    return call


@contextlib.contextmanager
def silenced_native_output() -> Iterator[None]:
    """Swallow everything printed on fds 1 and 2, natively or from Python (a converter's page of settings)."""
    with open(os.devnull, "w", encoding="utf-8") as sink, _fds_to(sink.fileno(), (1, 2)):
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield


_KERAS: Any = None


def import_keras() -> Any:
    """Import Keras (TensorFlow backend by default) once, with GPU memory growth set before any model."""
    global _KERAS
    if _KERAS is None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with filtered_native_stderr():
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                for gpu in tf.config.list_physical_devices("GPU"):
                    try:
                        tf.config.experimental.set_memory_growth(gpu, True)
                    except RuntimeError:
                        pass  # Already initialised by the host program: its setting stands.
                # TensorFlow runs float32 convolutions in TensorFloat-32 (10-bit mantissa) on Ampere and newer
                # GPUs by default: "float32" must mean the reference's float32 (float16 is the fast option).
                tf.config.experimental.enable_tensor_float_32_execution(False)
        _KERAS = keras
    return _KERAS


def device_name() -> str:
    """``GPU`` when the Keras backend sees one, else ``CPU``."""
    keras = import_keras()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    if keras.backend.backend() == "jax":
        import jax

        return "GPU" if any(d.platform == "gpu" for d in jax.devices()) else "CPU"
    return "CPU"
