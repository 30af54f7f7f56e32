"""Independent sections of a view: ``st.fragment``s that rerun alone when their own widgets change."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import streamlit as st

from dashboard import cached
from dashboard.messages import shown_errors


def section(func: Callable[..., None]) -> Callable[..., None]:
    """``func(col, index_dir, generation, *args)`` as a fragment called with ``(index_dir, generation, *args)``.

    A rerun of the fragment alone skips the page's checks, so it makes them itself: the collection as it is
    now (an index changed on disk gives its message; a re-index since the page was drawn reruns the page), and
    errors shown as the page shows them. A query change from inside it reruns the page (see dashboard.state).
    """
    @functools.wraps(func)
    def body(index_dir: Path, generation: str, *args, **kwargs) -> None:
        with shown_errors():
            func(cached.live_collection(index_dir, generation), index_dir, generation, *args, **kwargs)

    return st.fragment(body)
