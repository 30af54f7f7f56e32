"""The Duplicates tab: groups of images closer than a distance threshold, and the distances' histogram."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import cached, state
from dashboard.components.filters import Active, filter_bar
from dashboard.components.thumbs import image_rows
from dashboard.fragments import section
from imgsim.collection import Collection
from imgsim.serving import charts, export
from imgsim.serving.policy import plain

GROUPS = 40  # groups shown; the CSV has all
PER_GROUP = 8


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The filter, the threshold, the groups and the histogram."""
    duplicates(index_dir, generation, filter_bar(col))


@section
def duplicates(col: Collection, index_dir: Path, generation: str, applied: Active) -> None:
    """Reruns alone when the threshold moves."""
    nearest = col.nearest_distances()
    left, right = st.columns([1, 2], gap="large")
    with left:
        threshold = st.slider("Distance threshold", 0.0, 1.0, 0.15, 0.01, key=state.THRESHOLD, bind="query-params",
                              help="Two images closer than this are linked; linked images form a group.")
        scan = cached.duplicate_scan(str(index_dir), generation, float(threshold), applied.where)
        groups = scan.groups
        in_groups = sum(len(g.rows) for g in groups)
        st.metric("Groups", len(groups), help="connected components of images within the threshold")
        if applied.where is not None:
            st.caption(f"{in_groups} of the {applied.passing:,} images that match the filter are in a group "
                       "(pairs of matching images only).")
        else:
            st.caption(f"{in_groups} of {col.count} images are in a group.")
        if not groups and len(nearest) and applied.where is None:
            st.info(f"No two images are within {threshold:.2f} of each other: the closest pair is "
                    f"{float(nearest.min()):.3f} apart. Raise the threshold to see groups.")
        if scan.truncated:
            st.warning(scan.note(threshold), icon=":material/warning:")
        if groups:
            st.download_button("Download groups as CSV", lambda: export.groups_csv(col.paths, groups, threshold),
                               file_name="imgsim-duplicates.csv", mime="text/csv", on_click="ignore")
    with right:
        st.plotly_chart(charts.distance_histogram(nearest, threshold), width="stretch", key="dup_hist",
                        config=charts.plotly_config())
    for number, g in enumerate(groups[:GROUPS], start=1):
        st.markdown(f"**Group {number}** · {len(g.rows)} images")
        nearest_of = dict(zip(g.rows[:PER_GROUP], g.nearest[:PER_GROUP]))
        image_rows(col, g.rows, lambda r, d=nearest_of: f"{plain(col.paths[r])} · nearest {d[r]:.3f}", limit=PER_GROUP,
                   columns=PER_GROUP)  # every group's thumbnails one size: a pair is not stretched to a quarter
        if len(g.rows) > PER_GROUP:
            st.caption(f"… and {len(g.rows) - PER_GROUP} more in the CSV.")
    if len(groups) > GROUPS:
        st.caption(f"Showing {GROUPS} of {len(groups)} groups; the CSV has all of them.")
