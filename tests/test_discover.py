"""Folder discovery: extensions, hidden files, symlinks that leave the folder, loops, dangling links."""

from __future__ import annotations

import os

import pytest

from imgsim.discover import discover
from imgsim.errors import ImgsimError, SkipReason


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_finds_image_extensions_in_any_case_and_counts_the_rest(tmp_path):
    for name in ["a.jpg", "b.JPEG", "c.Png", "d.gif", "e.bmp", "f.webp", "g.tif", "h.TIFF", "sub/deep/i.jpg"]:
        touch(tmp_path / name)
    for name in ["notes.txt", "raw.cr2", "sub/movie.mp4"]:
        touch(tmp_path / name)
    found = discover(tmp_path)
    assert [f.rel for f in found.files] == ["a.jpg", "b.JPEG", "c.Png", "d.gif", "e.bmp", "f.webp", "g.tif",
                                            "h.TIFF", "sub/deep/i.jpg"]
    assert found.ignored == 3
    assert found.skipped == []


def test_hidden_entries_and_excluded_index_folder_are_ignored(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / ".hidden.jpg")
    touch(tmp_path / ".cache" / "b.jpg")
    touch(tmp_path / "photos.imgsim" / "c.jpg")
    found = discover(tmp_path, exclude=(tmp_path / "photos.imgsim",))
    assert [f.rel for f in found.files] == ["a.jpg"]


def test_unicode_and_spaces_in_names(tmp_path):
    touch(tmp_path / "été à la plage" / "photo 1 ü.jpg")
    found = discover(tmp_path)
    assert [f.rel for f in found.files] == ["été à la plage/photo 1 ü.jpg"]
    assert found.files[0].path.is_file()


def test_symlinks_inside_are_followed_outside_are_skipped(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(root / "real" / "a.jpg")
    touch(outside / "secret.jpg")
    os.symlink(root / "real", root / "alias")
    os.symlink(outside / "secret.jpg", root / "leak.jpg")
    os.symlink(outside, root / "leakdir")
    found = discover(root)
    assert [f.rel for f in found.files] == ["real/a.jpg"]
    reasons = {s.path: s.reason for s in found.skipped}
    assert reasons == {"alias": SkipReason.ALIAS, "leak.jpg": SkipReason.OUTSIDE, "leakdir": SkipReason.OUTSIDE}


def test_symlink_into_a_hidden_folder_is_followed(tmp_path):
    touch(tmp_path / ".store" / "x.jpg")
    os.symlink(tmp_path / ".store", tmp_path / "shown")
    found = discover(tmp_path)
    assert [f.rel for f in found.files] == ["shown/x.jpg"]


def test_symlink_loops_and_dangling_links_are_survived(tmp_path):
    touch(tmp_path / "sub" / "a.jpg")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")
    found = discover(tmp_path)
    assert [f.rel for f in found.files] == ["sub/a.jpg"]
    reasons = {s.path: s.reason for s in found.skipped}
    assert reasons["sub/loop"] is SkipReason.LOOP
    assert reasons["dangling.jpg"] is SkipReason.DANGLING
    assert "self.jpg" in reasons


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImgsimError, match=r"Image folder not found: .*nope\. Check the path"):
        discover(tmp_path / "nope")


def test_names_that_are_not_utf8_are_skipped_with_a_reason(tmp_path):
    touch(tmp_path / "ok.jpg")
    base = os.fsencode(str(tmp_path))
    touch(__import__("pathlib").Path(os.fsdecode(base + b"/caf\xe9.jpg")))
    touch(__import__("pathlib").Path(os.fsdecode(base + b"/d\xefr/inner.jpg")))
    touch(__import__("pathlib").Path(os.fsdecode(base + b"/notes-\xe9.txt")))
    found = discover(tmp_path)
    assert [f.rel for f in found.files] == ["ok.jpg"]
    assert [(s.path, s.reason, s.detail) for s in found.skipped] == [
        ("caf\ufffd.jpg", SkipReason.UNREADABLE, "its name is not valid UTF-8; rename it to index it"),
        ("d\ufffdr", SkipReason.UNREADABLE, "its name is not valid UTF-8; rename it to index it")]
    assert found.ignored == 1
    for s in found.skipped:
        s.path.encode("utf-8")  # storable in the index's JSON


def test_a_root_whose_path_is_not_utf8_is_refused_with_a_message(tmp_path):
    root = __import__("pathlib").Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/photos-\xe9"))
    touch(root / "a.jpg")
    with pytest.raises(ImgsimError, match=r"is not valid UTF-8, which the index cannot record\. Rename the folder"):
        discover(root)
