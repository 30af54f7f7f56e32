"""Shared helpers for the benchmarks: machine description, table printing, synthetic vectors."""

from __future__ import annotations

import os
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
sys.path.insert(0, str(REPO))


def machine() -> str:
    """One line naming the machine the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (pastes straight into the README)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def clustered_unit_vectors(n: int, d: int, seed: int = 0, clusters: int = 200, latent: int = 48,
                           spread: float = 0.45, noise: float = 0.25, chunk: int = 256) -> np.ndarray:
    """Synthetic stand-ins for CNN features: non-negative, correlated, in clusters, unit length.

    Built chunk by chunk in float32 so that 5,000 x 100,352 (2 GB) fits without a float64 copy.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    mixing = rng.normal(size=(latent, d)).astype(np.float32) / np.sqrt(latent)
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = centres[labels[start:start + m]] + spread * rng.normal(size=(m, latent)).astype(np.float32)
        x = z @ mixing + noise * rng.normal(size=(m, d)).astype(np.float32)
        np.maximum(x, 0, out=x)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + m] = x
    return out
