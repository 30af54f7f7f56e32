"""The About tab: what built the index, how it searches, whether neighbours share a folder, what was skipped."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import cached
from dashboard.messages import say, skip_detail
from dashboard.settings import policy
from imgsim.collection import Collection
from imgsim.serving import policy as serving
from imgsim.serving.policy import plain


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The index, its search method, the folder check and the skipped files."""
    meta = col.index.meta
    st.markdown(f"**{col.count} images** from {plain(policy().display_name(col.index.root))} · "
                f"model {meta['backbone']}"
                + (f" (preset {serving.code(Path(meta['preset']).name)})" if meta.get("preset") else "")
                + f" ({col.index.pooling}, {col.index.dims:,} values per image) · "
                f"weights: {say(col.weights_label)} · updated {meta['updated']}")  # may name a local preset
    st.markdown(col.search_summary())
    neighbours_and_folders(col, index_dir, generation)
    if col.index.skipped:
        st.subheader(f"Skipped files ({len(col.index.skipped)})")
        st.dataframe([{"file": serving.shorten(s.path), "reason": s.reason.value, "detail": skip_detail(s)}
                      for s in col.index.skipped],
                     hide_index=True, width="stretch")


def neighbours_and_folders(col: Collection, index_dir: Path, generation: str) -> None:
    """precision@5 and 1-NN accuracy against the sub-folders, overall and per folder."""
    ev = cached.evaluation(str(index_dir), generation, 5)
    st.subheader("Do neighbours share a folder?")
    if ev.queries == 0:
        st.info("This collection has no sub-folders, so there are no labels to check neighbours against.")
        return
    if col.is_random:
        st.warning("These figures come from random weights: they measure colour and texture statistics, "
                   "not what the images show.")
    a, b, c = st.columns(3)
    a.metric(f"precision@{ev.k}", f"{ev.precision_at_k:.3f}", help="share of the k nearest (the image itself "
             "not counted) that are in the query's sub-folder")
    b.metric("1-NN accuracy", f"{ev.nn_accuracy:.3f}")
    c.metric("random ranking (expected)", f"{ev.baseline_precision_at_k:.3f}")
    st.dataframe([{"folder": s.label, "images": s.images, f"precision@{ev.k}": s.precision_at_k,
                   "1-NN accuracy": s.nn_accuracy, "random": s.baseline}
                  for s in ev.per_label], hide_index=True, width="stretch",
                 column_config={name: st.column_config.NumberColumn(format="%.3f")
                                for name in (f"precision@{ev.k}", "1-NN accuracy", "random")})
    st.caption(f"Same numbers as `python -m imgsim evaluate INDEX_DIR -k {ev.k}`.")
