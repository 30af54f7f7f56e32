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
    "model": "Loading model",
}
