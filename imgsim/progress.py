"""Progress reporting shared by the CLI (tqdm) and the dashboard (st.progress)."""

from __future__ import annotations

from typing import Callable, Optional

#: ``progress(stage, done, total)``; ``total`` is None when the amount of work is unknown.
ProgressFn = Callable[[str, int, Optional[int]], None]


def no_progress(stage: str, done: int, total: int | None) -> None:
    """A progress callback that ignores every report."""


STAGE_LABELS = {
    "scan": "Scanning folder",
    "extract": "Extracting features",
    "save": "Writing index",
    "compress": "Fitting search projection",
    "neighbors": "Finding nearest neighbours",
    "map": "Building 2-D map (t-SNE)",
    "place": "Placing images on the map among their neighbours",
    "ann": "Building approximate-search index",
    "model": "Loading ResNet50 (on first use Keras downloads its ImageNet weights, 94.7 MB)",
    "model_load": "Loading the model",
}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe(stage: str, done: int, total: int | None, elapsed: float) -> str:
    """One line for a progress bar: stage, count, rate and time left when they are known.

    >>> describe("extract", 120, 373, 3.0)
    'Extracting features: 120 / 373 · 40.0 images/s · about 6 s left'
    >>> describe("map", 0, None, 12.0)
    'Building 2-D map (t-SNE)… 12 s'
    >>> describe("map", 250, 1000, 2.0)
    'Building 2-D map (t-SNE): 250 / 1,000 iterations'
    """
    label = STAGE_LABELS.get(stage, stage)
    if total is None:  # no count to show: the time spent keeps the line moving
        return f"{label}… {_duration(elapsed)}" if elapsed >= 2 else f"{label}…"  # a stage that takes a moment
    parts = [f"{label}: {done:,} / {total:,}" + (" iterations" if stage == "map" else "")]
    if stage == "extract" and done > 0 and elapsed > 0:
        rate = done / elapsed
        parts.append(f"{rate:.1f} images/s")
        if done < total:
            parts.append(f"about {_duration((total - done) / rate)} left")
    return " · ".join(parts)


def fraction(done: int, total: int | None) -> float:
    """Progress in [0, 1] (0 while the total is unknown)."""
    return min(1.0, done / total) if total else 0.0
