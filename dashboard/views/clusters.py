"""The Clusters tab: k-means albums of the collection, each listed by its most central images or opened whole."""

from __future__ import annotations

from pathlib import Path

import plotly.io as pio
import streamlit as st

from dashboard import cached, state
from dashboard.components.filters import Active, filter_bar
from dashboard.components.thumbs import image_rows
from dashboard.fragments import section
from imgsim.collection import Collection
from imgsim.serving import charts, export
from imgsim.serving.policy import plain

OPENED = 96  # images of an opened cluster shown; the CSV has all
CENTRAL = 8


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The clusters, or why this index has none."""
    if col.count < 2:
        st.info("Clusters need at least two images.")
        return
    if not col.can_cluster:
        st.info(f"Clusters need the PCA coordinates of every image, which this index does not keep: it answers "
                f"queries with approximate search ({col.count:,} images). Build an index with `--search exact` "
                "to cluster it.")
        return
    clusters(index_dir, generation, filter_bar(col))


@section
def clusters(col: Collection, index_dir: Path, generation: str, applied: Active) -> None:
    """Reruns alone when k changes or a cluster is opened or closed."""
    suggestion = cached.suggested_k(str(index_dir), generation)
    left, right = st.columns([1, 2], gap="large")
    with left:
        top = max(2, min(50, col.count))
        k = st.number_input("Number of clusters (k)", 1, top, min(max(suggestion.k, 1), top),
                            key=state.CLUSTERS_K, bind="query-params", help="k-means on the PCA-compressed feature vectors")
        if suggestion.scores:
            st.caption(f"Suggested: k = {suggestion.k}, the best silhouette score for k from "
                       f"{min(suggestion.scores)} to {max(suggestion.scores)} on {suggestion.sample_size} images.")
        model = cached.cluster_model(str(index_dir), generation, int(k))
        st.metric("Clusters", model.k_)
        st.download_button("Download clusters as CSV",  # made when pressed: every image, one line each
                           lambda: export.clusters_csv(col.paths, model.labels_, model.distances_),
                           file_name="imgsim-clusters.csv", mime="text/csv", on_click="ignore")
        st.caption(f"`python -m imgsim cluster INDEX_DIR --k {model.k_} --out DIR --link` lays them out in "
                   "folders (symlinks; originals untouched).")
    with right:
        st.plotly_chart(pio.from_json(cached.cluster_map_json(str(index_dir), generation, model.k_, 420)),
                        width="stretch", key="cluster_map", config=charts.plotly_config())
    if applied.where is not None:
        st.caption(f"The clusters of the whole collection; each lists only its images that match the filter "
                   f"({applied.passing:,} of {col.count:,}).")
    opened = state.opened_cluster()
    if opened is not None and opened < model.k_:
        head, close = st.columns([5, 1])
        members = applied.keep(model.members(opened))
        head.subheader(f"Cluster {opened + 1} · {len(members)} images"
                       + (f" of {int(model.sizes_[opened])} match the filter" if applied.where is not None else "")
                       + ", nearest to its centre first")
        close.button("Back to all clusters", key="cluster_close", width="stretch", on_click=state.open_cluster,
                     args=(None,))
        image_rows(col, members, lambda r: f"{plain(col.paths[r])} · {model.distances_[r]:.3f}", limit=OPENED)
        if len(members) > OPENED:
            st.caption(f"… and {len(members) - OPENED} more in the CSV.")
        return
    for c in range(model.k_):
        # Members come nearest to the centre first: the first that match are its most central matching images.
        central = model.central(c, CENTRAL) if applied.where is None else applied.keep(model.members(c))
        if not len(central):
            continue
        head, action = st.columns([5, 1])
        head.markdown(f"**Cluster {c + 1}** · " + (f"{len(central)} of {int(model.sizes_[c])} images match the filter"
                                                   if applied.where is not None else f"{int(model.sizes_[c])} images"))
        action.button("Open", key=f"cluster_{c}", width="stretch", help="Show every image of this cluster",
                      on_click=state.open_cluster, args=(c,))
        image_rows(col, central, lambda r: plain(col.paths[r]), limit=CENTRAL)
