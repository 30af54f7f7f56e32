"""Serving policy: which folders a visitor may choose, the indexing switch, and untrusted text as text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgsim.serving.policy import REFUSED, Policy, code, is_loopback, plain, redact, shorten

PAYLOAD = "**bold** [click here to log in](http://host/phish) ![t](http://host/track.png)"


@pytest.fixture
def roots(tmp_path) -> tuple[Path, Path]:
    """Two roots with folders, a hidden folder, a file, and symlinks that lead in and out."""
    a, b = tmp_path / "photos", tmp_path / "catalogue"
    (a / "trips" / "2024").mkdir(parents=True)
    (a / ".secret").mkdir()
    (b / "shoes").mkdir(parents=True)
    (a / "notes.txt").write_text("x")
    (a / "to-etc").symlink_to("/etc")
    (a / "to-shoes").symlink_to(b / "shoes")
    outside = tmp_path / "outside"
    outside.mkdir()
    (a / "to-outside").symlink_to(outside)
    return a, b


def policy(roots, **env) -> Policy:
    a, b = roots
    return Policy.from_env(a, "0.0.0.0", {"IMGSIM_ROOTS": f"{a}{os.pathsep}{b}", **env})


def test_without_roots_no_folder_can_be_chosen(roots):
    pol = Policy.from_env(roots[0], "0.0.0.0", {})
    assert not pol.can_choose
    assert pol.resolve(str(roots[0] / "trips")) is None


def test_folders_under_the_roots_resolve_absolute_or_relative(roots):
    a, b = roots
    pol = policy(roots)
    assert pol.resolve(str(a / "trips")) == a / "trips"
    assert pol.resolve("trips/2024") == a / "trips" / "2024"
    assert pol.resolve("shoes") == b / "shoes"
    assert pol.resolve(str(a)) == a
    assert pol.resolve(str(a / "to-shoes")) == b / "shoes"  # a link from one root into another stays served


@pytest.mark.parametrize("typed", ["/etc", "/root", "/root/photos", "/", "../..", "../../etc", "trips/../../..",
                                   "{a}/../outside", "{a}/to-etc", "{a}/to-etc/ssl", "to-etc", "{a}/to-outside",
                                   "{a}/.secret", ".secret", "{a}/notes.txt", "{a}/missing", "missing",
                                   "/definitely/not/there", "~", "{a}/trips\x00", "x" * 5000, " "])
def test_everything_else_is_refused_the_same_way(roots, typed):
    pol = policy(roots)
    assert pol.resolve(typed.replace("{a}", str(roots[0]))) is None


def test_refusal_message_never_mentions_a_path():
    assert "/" not in REFUSED and "exist" not in REFUSED


def test_indexing_switch_follows_the_setting_else_the_address(roots):
    a = roots[0]
    assert Policy.from_env(a, "127.0.0.1", {}).allow_indexing
    assert Policy.from_env(a, "localhost", {}).allow_indexing
    assert Policy.from_env(a, "::1", {}).allow_indexing
    assert not Policy.from_env(a, "0.0.0.0", {}).allow_indexing
    assert not Policy.from_env(a, "", {}).allow_indexing  # Streamlit's default: every interface
    assert not Policy.from_env(a, None, {}).allow_indexing
    assert not Policy.from_env(a, "192.168.1.5", {}).allow_indexing
    assert Policy.from_env(a, "0.0.0.0", {"IMGSIM_ALLOW_INDEXING": "1"}).allow_indexing
    assert not Policy.from_env(a, "127.0.0.1", {"IMGSIM_ALLOW_INDEXING": "0"}).allow_indexing
    assert is_loopback("127.0.0.2") and not is_loopback("example.org")


def test_visitors_see_names_relative_to_the_roots(roots):
    a, b = roots
    pol = policy(roots)
    assert pol.display_name(a / "trips" / "2024") == "photos/trips/2024"
    assert pol.display_name(b) == "catalogue"
    assert Policy.from_env(a, None, {}).display_name(Path("/srv/data/demo")) == "demo"


def test_markdown_payload_is_escaped_so_nothing_renders():
    out = plain(PAYLOAD)
    assert "](" not in out.replace("\\](", "")
    assert "[" not in out.replace("\\[", "") and "!" not in out.replace("\\!", "")
    assert "*" not in out.replace("\\*", "")
    assert "http://" not in out and "http:" not in out.replace("\\:", "")  # no bare autolink either
    # Unescaping (what Markdown does) gives the visitor back exactly what was sent, minus invisible joiners.
    assert out.replace("\\", "").replace("\u2060", "") == PAYLOAD


@pytest.mark.parametrize("text", ["www.evil.example", "mail me: a@b.example", ":red[alarm]", "<b>x</b>",
                                  "$x^2$", "# heading", "- item", "1. first", "`code`", "~~gone~~", "a|b"])
def test_other_markup_is_escaped(text):
    out = plain(text)
    assert out.replace("\\", "").replace("\u2060", "") == text
    assert out != text


def test_ordinary_file_names_are_unchanged():
    for name in ("reds/r2.jpg", "holiday photo.jpg", "mammals/tiger.jpg", "IMG 0001 (copy).png"):
        assert plain(name) == name


def test_long_values_are_cut_and_control_characters_removed():
    assert len(plain("q" * 60000)) == 120 and plain("q" * 60000).endswith("…")
    assert shorten("a\nb\r\nc\u202ed") == "a b c d"


def test_code_span_cannot_be_closed_from_inside():
    assert code("a`b") == "``a`b``"
    assert code("`x`") == "`` `x` ``"


def test_redact_replaces_longest_paths_first():
    msg = "Index file vectors.npy in /srv/cache/idx is damaged; source /srv/cache"
    assert redact(msg, {"/srv/cache": "cache", "/srv/cache/idx": "(the index)"}) == (
        "Index file vectors.npy in (the index) is damaged; source cache")


def test_roots_listed_with_spaces_around_the_separator_are_the_folders_meant(roots):
    a, b = roots
    pol = Policy.from_env(a, "0.0.0.0", {"IMGSIM_ROOTS": f" {a} {os.pathsep} {b} "})
    assert pol.roots == (a, b)
    assert pol.resolve("shoes") == b / "shoes"
