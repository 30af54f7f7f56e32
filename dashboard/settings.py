"""Which collection this session shows: the operator's serving policy, a folder the visitor chose, the index."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dashboard import state
from dashboard.paths import DEMO_DIR
from imgsim.collection import default_index_dir
from imgsim.serving import policy as serving
from imgsim.store.generations import index_exists, index_root


def policy() -> serving.Policy:
    """The operator's serving policy: which folders visitors may choose, whether they may index."""
    env_images = os.environ.get("IMGSIM_IMAGES")
    default = Path(env_images).expanduser() if env_images else DEMO_DIR
    return serving.Policy.from_env(default, st.get_option("server.address"))


@dataclass(frozen=True)
class Settings:
    """This session's collection: its image folder, index folder and the weights for a new index."""

    folder: Path
    index_dir: Path
    weights: str
    automatic: bool  # from the environment or the default (indexed without asking), not typed by the visitor


def settings(pol: serving.Policy) -> Settings:
    """The session's settings. A folder typed in the sidebar is used only when the operator's roots allow it (see
    imgsim.serving.policy); otherwise the session stays on the server's own collection and the sidebar says
    the folder is refused."""
    weights = os.environ.get("IMGSIM_WEIGHTS") or "imagenet"
    typed = st.session_state.get(state.FOLDER_INPUT, "").strip() if pol.can_choose else ""
    env_index = os.environ.get("IMGSIM_INDEX")
    st.session_state[state.FOLDER_REFUSED] = False
    if typed:
        folder = pol.resolve(typed)
        if folder is not None:
            return Settings(folder, default_index_dir(folder, weights), weights, False)
        st.session_state[state.FOLDER_REFUSED] = True
    env_images = os.environ.get("IMGSIM_IMAGES")
    if env_index and not env_images and index_exists(env_index):
        return Settings(index_root(env_index), Path(env_index), weights, True)  # metadata only, not the whole index
    folder = Path(env_images).expanduser() if env_images else DEMO_DIR
    index_dir = Path(env_index).expanduser() if env_index else default_index_dir(folder, weights)
    return Settings(folder, index_dir, weights, True)


def folder_refused() -> bool:
    """Whether the folder the visitor typed was refused on this run."""
    return bool(st.session_state.get(state.FOLDER_REFUSED))
