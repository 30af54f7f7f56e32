"""Serving policy: what a visitor of the dashboard may choose, and how untrusted text is shown.

The collection is the server's decision. The operator names it (``IMGSIM_IMAGES``, else the demo) and may
list roots under which visitors can choose other folders (``IMGSIM_ROOTS=/data/photos:/srv/catalogue``).
Indexing a folder from the page is allowed only when ``IMGSIM_ALLOW_INDEXING=1``, or when it is unset and
the server listens on a loopback address only. The automatic first-run indexing of the operator's own
collection is always allowed: the operator chose it.

Every refusal reads the same, so a visitor cannot learn whether a path outside the roots exists.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: The single message for every folder a visitor may not use (missing, hidden, outside the roots, a file).
REFUSED = "That folder is not available here. Choose a folder under the collections this server offers."
#: Longest untrusted value shown on the page (file names, URL values); longer ones are cut with "…".
MAX_SHOWN = 120
#: Images to look like, and apart images to avoid, in one more-like-these query: a link's ``q=`` list is the
#: visitor's to make as long as they like, and each one is a vector read and averaged.
MAX_EXAMPLES = 50

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Policy:
    """The operator's settings for one server process."""

    default_folder: Path
    roots: tuple[Path, ...] = ()
    allow_indexing: bool = False

    @classmethod
    def from_env(cls, default_folder: str | os.PathLike, address: str | None,
                 environ: Mapping[str, str] | None = None) -> "Policy":
        """Read ``IMGSIM_ROOTS`` and ``IMGSIM_ALLOW_INDEXING``; ``address`` is the one the server listens on."""
        env = os.environ if environ is None else environ
        roots = tuple(Path(os.path.realpath(Path(r.strip()).expanduser()))  # " /x" would be relative to the cwd
                      for r in (env.get("IMGSIM_ROOTS") or "").split(os.pathsep) if r.strip())
        flag = (env.get("IMGSIM_ALLOW_INDEXING") or "").strip().lower()
        allow = flag in _TRUE if flag in _TRUE | _FALSE else is_loopback(address)
        return cls(Path(os.path.realpath(Path(default_folder).expanduser())), roots, allow)

    @property
    def can_choose(self) -> bool:
        """Whether visitors may pick a folder other than the default one."""
        return bool(self.roots)

    def resolve(self, typed: str) -> Path | None:
        """The real folder a visitor asked for, or None (always the same refusal, see :data:`REFUSED`).

        A relative value is looked up under each root in turn; any hidden component (``.x``, ``..``) in
        what was typed or in the resolved path below its root is refused; symlinks are resolved first,
        so a link inside a root that leads outside it is refused too.
        """
        typed = typed.strip()
        if not typed or not self.roots or len(typed) > 4096 or "\x00" in typed:
            return None
        if any(part.startswith(".") for part in Path(typed).parts if part not in ("/",)):
            return None
        raw = Path(typed)
        candidates = [raw] if raw.is_absolute() else [root / raw for root in self.roots]
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            root = self.root_of(real)
            if root is None:
                continue
            if any(part.startswith(".") for part in real.relative_to(root).parts):
                continue
            if real.is_dir():
                return real
        return None

    def root_of(self, real: Path) -> Path | None:
        """The root that contains an already resolved path, or None."""
        for root in self.roots:
            if real == root or root in real.parents:
                return root
        return None

    def display_name(self, folder: Path) -> str:
        """How a collection is named to visitors: relative to its root, or just its folder name."""
        real = Path(os.path.realpath(folder))
        root = self.root_of(real)
        if root is not None:
            rel = real.relative_to(root).as_posix()
            return f"{root.name}/{rel}" if rel != "." else root.name
        return real.name or "collection"


def is_loopback(address: str | None) -> bool:
    """True when the server listens on a loopback address only (an unset address means all interfaces)."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


# --- untrusted text ---------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")
_MARKUP = re.compile(r"([\\`*_\[\]{}<>#!|~$:&])")
_AUTOLINK = re.compile(r"(?i)(www)\.|(@)|(\\:)//")
_WJ = "\u2060"  # word joiner: invisible, but breaks the patterns GFM turns into links after parsing


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """One line, at most ``limit`` characters ("…" marks a cut)."""
    text = _CONTROL.sub(" ", str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str, limit: int = MAX_SHOWN) -> str:
    """Untrusted text made safe to put inside Streamlit Markdown: shown as typed, never as markup.

    Markdown punctuation is backslash-escaped (links, images, emphasis, ``:colour[...]`` directives, HTML,
    maths); bare ``www.`` and e-mail autolinks, which GFM finds after escapes are resolved, get an invisible
    word joiner; a leading list or heading marker is escaped. Ordinary file names come out unchanged.
    """
    text = _MARKUP.sub(r"\\\1", shorten(text, limit))
    text = _AUTOLINK.sub(_break_autolink, text)
    text = re.sub(r"^(\s*)([-+=])", r"\1\\\2", text)
    return re.sub(r"^(\s*\d+)([.)])", r"\1\\\2", text)


def _break_autolink(m: re.Match) -> str:
    if m.group(1):
        return m.group(1) + _WJ + "."
    if m.group(2):
        return _WJ + "@"
    return m.group(3) + _WJ + "//"


def redact(message: str, paths: Mapping[str | os.PathLike, str]) -> str:
    """A message with server paths replaced by the names visitors know them by (longest paths first)."""
    out = str(message)
    for path, name in sorted(((str(p), n) for p, n in paths.items() if str(p) not in ("", "/", ".")),
                             key=lambda item: -len(item[0])):
        out = out.replace(path, name)
    return out


def code(text: str, limit: int = MAX_SHOWN) -> str:
    """Untrusted text as a Markdown code span (literal, monospace), fenced so no backtick inside can end it."""
    text = shorten(text, limit)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
