"""The dashboard on a shared server (issue 11), driven with AppTest: folder choice under the operator's roots
only, untrusted text shown as text, the query kept as a path across re-indexes, an index changed under the
server, and indexing as one server-side job shared by every session."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import streamlit as st

import imgsim.build
import imgsim.models.base
from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.serving import mapview
from imgsim.serving.policy import REFUSED, plain

from .conftest import make_photo
from .test_app import APP, app_env, new_app, results, texts  # noqa: F401  (app_env is a fixture)
from .test_app_clip import clip_env  # noqa: F401  (a fixture)

PAYLOAD = "**bold** [click here to log in](http://host/phish) ![t](http://host/track.png)"


def everything(at) -> str:
    """All text of a run, sidebar included, plus button labels and help."""
    buttons = [f"{b.label} {b.help or ''}" for b in at.button]
    return texts(at) + "\n" + "\n".join(buttons) + "\n" + "\n".join(str(t.value) for t in at.toast)


@pytest.fixture
def roots(tmp_path, photo_dir):
    """A root with a copy of the photos (no index yet) and a symlink that leads out of it."""
    root = tmp_path / "served"
    shutil.copytree(photo_dir, root / "holiday")
    (root / "to-etc").symlink_to("/etc")
    (root / ".private").mkdir()
    return root


# --- 1. the collection is the server's decision ------------------------------------------------------------

def test_without_roots_the_folder_box_is_absent_and_typed_paths_are_ignored(app_env, built_index, photo_dir):
    at = new_app()
    at.session_state["folder_input"] = "/etc"
    at.run()
    assert not at.exception
    assert not [t for t in at.text_input if t.key == "folder_input"]
    assert "Collection: " + photo_dir.name in everything(at)
    assert not [b for b in at.button if b.label in ("Update index", "Index this folder")]  # not on 0.0.0.0
    page = everything(at)
    for secret in (str(built_index), str(photo_dir), "passwd"):
        assert secret not in page


@pytest.mark.parametrize("typed", ["/etc", "/root", "/root/.ssh", "../..", "../../../etc", "holiday/../..",
                                   "to-etc", "{root}/to-etc", ".private", "{root}/nope", "/usr/share/icons/hicolor"])
def test_a_visitor_cannot_index_or_view_folders_outside_the_roots(app_env, monkeypatch, roots, typed):
    monkeypatch.setenv("IMGSIM_ROOTS", str(roots))
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "1")
    calls = []
    monkeypatch.setattr(imgsim.build, "build_index", lambda *a, **k: calls.append(a))
    at = new_app().run()
    at.text_input(key="folder_input").set_value(typed.replace("{root}", str(roots))).run()
    assert not at.exception
    assert [e.value for e in at.sidebar.error] == [REFUSED]
    page = everything(at)
    assert "passwd" not in page and "hicolor" not in page and "/etc" not in page.replace(typed, "")
    assert str(roots) not in page and str(app_env.index.root) not in page
    assert any(t.label == "Search" for t in at.tabs)  # still on the server's own collection
    for b in at.button:
        if b.label == "Update index":
            b.click().run()
            break
    assert all(str(a[0]).startswith(str(app_env.index.root)) for a in calls)  # never the refused folder


def test_a_folder_under_a_root_is_offered_and_indexing_it_follows_the_setting(app_env, monkeypatch, roots,
                                                                              random_extractor):
    monkeypatch.setenv("IMGSIM_ROOTS", str(roots))
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "0")
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: random_extractor)
    at = new_app().run()
    at.text_input(key="folder_input").set_value("holiday").run()
    assert not at.exception and not at.sidebar.error
    assert "Collection: served/holiday" in everything(at)
    assert any("indexing from the page is turned off on this server" in i.value for i in at.info)
    assert not [b for b in at.button if b.label == "Index this folder"]
    monkeypatch.setenv("IMGSIM_ALLOW_INDEXING", "1")
    at.run()
    [b for b in at.button if b.label == "Index this folder"][0].click().run()
    for _ in range(60):
        if any(t.label == "Search" for t in at.tabs):
            break
        at.run()
    assert any(t.label == "Search" for t in at.tabs), everything(at)
    assert str(roots) not in everything(at)


# --- 2. untrusted text is text -----------------------------------------------------------------------------

def test_markdown_in_a_shared_link_is_shown_as_plain_text(app_env):
    at = new_app(q=PAYLOAD).run()
    assert not at.exception
    [warning] = [w.value for w in at.warning if "link" in w.value]
    assert warning == f"The image in the link ({plain(PAYLOAD)}) is not in this collection."
    for markup in (r"(?<!\\)\]\(", r"(?<!\\)!(?<!\\)\[", r"(?<!\\)\*\*", r"https?://"):  # link, image, bold, autolink
        assert not re.search(markup, warning), markup


def test_a_60000_character_link_value_is_cut(app_env):
    at = new_app(q="x" * 60000).run()
    assert not at.exception
    [warning] = [w.value for w in at.warning if "link" in w.value]
    assert len(warning) < 200 and "…" in warning


def test_upload_names_are_escaped(app_env, monkeypatch, random_extractor, tmp_path):
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: random_extractor)
    data = make_photo(tmp_path / "u.jpg", seed=77).read_bytes()
    at = new_app().run()
    at.file_uploader[0].set_value(("[x](http://h/p) **b**.jpg", data, "image/jpeg")).run()
    assert not at.exception
    assert any(c.value == "uploaded: " + plain("[x](http://h/p) **b**.jpg") for c in at.caption)


# --- 3. a query is a path, not a row -------------------------------------------------------------------------

@pytest.fixture
def live(tmp_path, photo_dir, extractor_factory, monkeypatch):
    """A private folder and index that the test re-indexes while a session is open."""
    folder = tmp_path / "live"
    shutil.copytree(photo_dir, folder)
    index_dir = tmp_path / "live.imgsim"
    build_index(folder, index_dir, weights="random", model_factory=extractor_factory)
    monkeypatch.setenv("IMGSIM_IMAGES", str(folder))
    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    return folder, index_dir


def first_result_caption(at) -> str:
    captions = [c.value for c in at.caption]
    i = next(i for i, c in enumerate(captions) if c.startswith("Distance: Euclidean"))
    return captions[i + 1]


def test_a_re_index_keeps_the_query_image_not_its_row(live, extractor_factory):
    folder, index_dir = live
    at = new_app().run()
    col = Collection.open(index_dir)
    at.button(key=f"pick_{col.paths.index('blues/b3.png')}").click().run()
    assert any(c.value == "query: blues/b3.png" for c in at.caption)
    # Files before it disappear: every row after them moves up.
    (folder / "blues" / "b0.png").unlink()
    (folder / "blues" / "b1.png").unlink()
    build_index(folder, index_dir, model_factory=extractor_factory)
    assert Collection.open(index_dir).paths.index("blues/b3.png") != col.paths.index("blues/b3.png")
    at.slider(key="k").set_value(5).run()  # the next interaction
    assert not at.exception
    assert any(c.value == "query: blues/b3.png" for c in at.caption)
    assert first_result_caption(at) == "blues/b3.png" and results(at)[0][1] == 0.0
    assert at.query_params["q"] == ["blues/b3.png"] or at.query_params["q"] == "blues/b3.png"
    # The query itself disappears: the page says so instead of showing another image.
    (folder / "blues" / "b3.png").unlink()
    build_index(folder, index_dir, model_factory=extractor_factory)
    at.run()
    assert not at.exception
    assert any("The query image blues/b3.png is no longer in this collection" in w.value for w in at.warning)
    assert not results(at)


# --- 4. an index changed under the running server --------------------------------------------------------

def test_truncating_a_served_index_between_reruns_gives_a_message_not_a_crash(index_copy, photo_dir, tmp_path):
    """In a subprocess: were the mapped file read after truncation, SIGBUS would kill it (exit -7)."""
    script = f"""
import os, pathlib
os.environ.update(IMGSIM_INDEX={str(index_copy)!r}, IMGSIM_IMAGES={str(photo_dir)!r}, IMGSIM_WEIGHTS="random",
                  IMGSIM_CACHE={str(tmp_path / 'cache')!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({APP!r}, default_timeout=120)
at.query_params["q"] = "reds/r1.jpg"
at.run()
assert not at.exception and not at.error
gen = (pathlib.Path({str(index_copy)!r}) / "CURRENT").read_text().strip()
for name in ("vectors.npy", "projected.npy", "map_xy.npy", "sqnorm.npy"):
    with open(pathlib.Path({str(index_copy)!r}) / gen / name, "r+b") as fh:
        fh.truncate(128)
for tab in ("Search", "Map", "Duplicates", "About this collection"):
    at.query_params["tab"] = tab
    at.run()
    assert not at.exception, at.exception
    print("ERROR:", [e.value for e in at.error])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=str(Path(APP).parent))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 4
    for line in errors:
        assert "is truncated or altered" in line and "Rebuild it with" in line
        assert str(index_copy) not in line and "(the index)" in line


# --- 5. one process, many sessions ------------------------------------------------------------------------

def _redacting_page():
    """A page that names this session's folder (only on a run that sets it, as a fragment's rerun does not)."""
    from pathlib import Path

    import streamlit as st

    from dashboard import messages

    if st.session_state.get("folder"):
        folder = Path(st.session_state["folder"])
        messages.set_redactions(folder, folder.with_suffix(".imgsim"), folder.name, "random")
    st.text(messages.say(st.session_state["probe"]))


def test_two_sessions_with_different_folders_never_see_each_others_redactions(tmp_path):
    """The dashboard's modules are imported once per process: a table of server paths kept there would be shared
    by every session, and a rerun that does not rebuild it (a fragment's) would use another visitor's."""
    from streamlit.testing.v1 import AppTest

    alice, bob = tmp_path / "alice-photos", tmp_path / "bob-photos"
    probe = f"{alice}/a.jpg and {bob}/b.jpg"
    sessions = {}
    for folder in (alice, bob):
        at = AppTest.from_function(_redacting_page, default_timeout=60)
        at.session_state["folder"], at.session_state["probe"] = str(folder), probe
        sessions[folder.name] = at.run()
    for at in sessions.values():  # each reruns without rebuilding its table, after the other session built its own
        at.session_state["folder"] = ""
        at.run()
    assert [t.value for t in sessions["alice-photos"].text] == [plain(f"alice-photos/a.jpg and {bob}/b.jpg", 2000)]
    assert [t.value for t in sessions["bob-photos"].text] == [plain(f"{alice}/a.jpg and bob-photos/b.jpg", 2000)]


def test_the_dashboard_log_has_one_handler_however_many_runs(app_env):
    import logging

    for _ in range(3):
        assert not new_app().run().exception
    assert len(logging.getLogger("imgsim.app").handlers) == 1


# --- 6. indexing as a server-side job ----------------------------------------------------------------------

def test_two_sessions_and_a_reload_share_one_indexing_job(monkeypatch, tmp_path, photo_dir, random_extractor):
    fresh = tmp_path / "fresh"
    shutil.copytree(photo_dir, fresh)
    monkeypatch.setenv("IMGSIM_IMAGES", str(fresh))
    monkeypatch.delenv("IMGSIM_INDEX", raising=False)
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGSIM_ROOTS", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: random_extractor)
    release, runs = threading.Event(), []
    real = imgsim.build.build_index

    def held_build(*args, **kwargs):
        runs.append(args[0])
        release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(imgsim.build, "build_index", held_build)

    def job_caption(at) -> str:
        return next(c.value for c in at.caption if c.value.startswith("Indexing job #"))

    first = new_app().run()
    assert not first.exception and first.get("progress")
    second = new_app().run()
    reload_ = new_app().run()  # the first visitor reloads: a new session, same job
    assert job_caption(first) == job_caption(second) == job_caption(reload_)
    assert not [e for at in (first, second, reload_) for e in at.error]  # no "Another imgsim run…" message
    release.set()
    for at in (first, second, reload_):
        for _ in range(240):  # what the page's once-a-second poll does in a browser
            at.run()
            if any(t.label == "Search" for t in at.tabs):
                break
            time.sleep(0.5)
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any(t.label == "Search" for t in at.tabs)
        assert [str(t.value) for t in at.toast if str(t.value).startswith("Indexed ")]  # it watched the job
        at.run()
        assert not [t for t in at.toast if str(t.value).startswith("Indexed ")]  # once
    assert len(runs) == 1
    late = new_app().run()  # a visitor arriving after the job finished: not news to them
    assert not late.exception and any(t.label == "Search" for t in late.tabs)
    assert not [t for t in late.toast if str(t.value).startswith("Indexed ")]


def authlib_installed(monkeypatch, installed: bool) -> None:
    """Whether the page finds Authlib (st.login needs it; this machine may or may not have it)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **kw: (
        (real("json") if installed else None) if name == "authlib" else real(name, *a, **kw)))


def test_with_login_required_a_visitor_who_is_not_signed_in_sees_nothing(app_env, monkeypatch, photo_dir):
    authlib_installed(monkeypatch, True)
    monkeypatch.setenv("IMGSIM_REQUIRE_LOGIN", "1")
    at = new_app(q="reds/r1.jpg").run()
    assert not at.exception
    assert [i.value for i in at.info] == ["This collection is private. Sign in to see it."]
    assert [b.label for b in at.button] == ["Log in"]
    assert not at.tabs and not results(at) and "reds/r1.jpg" not in everything(at)


def test_static_cache_holds_only_previews_of_collections_being_served(app_env):
    cache = Path(APP).parent / "static" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    left = cache / "0123456789ab-gen-000001.jpg"  # e.g. a folder a visitor indexed on an earlier server
    left.write_bytes(b"old preview")
    at = new_app(tab="Map").run()
    assert not at.exception
    assert not left.exists()
    # One folder per server process still running (this one's, and perhaps another test run's).
    ours = [p for p in cache.iterdir() if (p / mapview.OWNER).is_file()
            and (p / mapview.OWNER).read_text() == str(os.getpid())]
    assert len(ours) == 1 and all(p.name.endswith(".jpg") for p in ours[0].iterdir() if p.name not in (mapview.OWNER, mapview.STARTED))


def test_a_description_in_a_shared_link_is_shown_as_plain_text(clip_env):
    """The ?text= of a CLIP index is untrusted too."""
    at = new_app(text=PAYLOAD).run()
    assert not at.exception
    [shown] = [m.value for m in at.markdown if m.value.startswith("**Described:**")]
    assert shown == "**Described:**  \n“" + plain(PAYLOAD, 300) + "”"


def test_login_required_without_authlib_says_what_to_install(app_env, monkeypatch):
    """st.login without Authlib fails inside a button callback, in Streamlit's generic error box."""
    authlib_installed(monkeypatch, False)
    monkeypatch.setenv("IMGSIM_REQUIRE_LOGIN", "1")
    at = new_app(q="reds/r1.jpg").run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "This collection is private, and signing in needs Authlib, which is not installed on this server. "
        "Its operator can install it with `pip install Authlib` and restart the app."]
    assert not at.button and not at.tabs and "reds/r1.jpg" not in everything(at)
