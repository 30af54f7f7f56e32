#!/usr/bin/env python3
"""Write ``tests/data/index_COMMIT/``: a small index built by an older imgsim (default c6b858a, before the reshaping).

``tests/test_compat.py`` opens, queries and updates it with the current code; the on-disk format must not have
changed. The old code (``--commit``, default c6b858a) is unpacked with ``git archive`` into a temporary folder (the repository's
worktrees and refs are left alone) and run from there as ``python -m imgsim``::

    python3 scripts/make_compat_fixture.py [--commit COMMIT] [--force]

``--commit 4906d59`` writes ``tests/data/index_4906d59/``: an index of format 1 (the last commit before format 2).

What it writes (about 0.5 MB):

- ``photos/``: 12 demo photographs (data/demo, 3 from each of 4 folders), the folder the old code indexed;
- ``extra/``: 2 more demo photographs, which the update test adds;
- ``index/``: the old code's index of ``photos/`` (``CURRENT`` and one generation);
- ``images.json``: each photograph's source in data/demo, size, mtime and sha256, and the folder the index was
  built from (its ``meta.json`` records that absolute path as ``root``);
- ``old_answers.json``: what the old code itself answered: ``info --json`` and ``query --json`` of every photo.

Photographs get fixed modification times, so the index records the same ones on every run and a test can give
its copies those times back (git does not keep them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INDEXED = {"birds": 3, "coins": 3, "fish": 3, "flowers": 3}  # the first files of each folder, by name
EXTRA = ("birds/crow.jpg", "fruit/apple_fuji.jpg")
#: 2023-11-14 22:13:20 UTC, then one second apart: any fixed time works, it only has to be the same every run.
MTIME_NS = 1_700_000_000 * 10**9
SETTINGS = ["--weights", "random", "--pooling", "avg"]  # and --search exact where the old code has it
MAX_BYTES = 2 * 2**20


def run_old(old: Path, *args: str) -> str:
    """Run ``python -m imgsim ARGS`` with the old code, and return its standard output."""
    env = dict(os.environ, PYTHONPATH=str(old))
    done = subprocess.run([sys.executable, "-m", "imgsim", *args], cwd=old, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"old imgsim {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def copy_photo(old: Path, rel: str, dest: Path, mtime_ns: int) -> dict:
    """Copy one demo photograph, give it a fixed mtime, and describe it."""
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(old / "data" / "demo" / rel, target)
    os.utime(target, ns=(mtime_ns, mtime_ns))
    data = target.read_bytes()
    return {"path": rel, "source": f"data/demo/{rel}", "size": len(data), "mtime_ns": mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="c6b858a", help="the old code (default c6b858a)")
    parser.add_argument("--force", action="store_true", help="replace an existing tests/data/index_COMMIT")
    args = parser.parse_args()
    old_commit = args.commit
    out = REPO / "tests" / "data" / f"index_{old_commit}"
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists; pass --force to write it again.")
    with tempfile.TemporaryDirectory(prefix="imgsim-compat-") as tmp:
        work = Path(tmp)
        old = work / f"imgsim-{old_commit}"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", old_commit], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)

        photos, extra, index = work / "photos", work / "extra", work / "index"
        chosen = [f"{folder}/{name}" for folder, n in INDEXED.items()
                  for name in sorted(p.name for p in (old / "data" / "demo" / folder).glob("*.jpg"))[:n]]
        indexed = [copy_photo(old, rel, photos, MTIME_NS + i * 10**9) for i, rel in enumerate(chosen)]
        added = [copy_photo(old, rel, extra, MTIME_NS + (len(chosen) + i) * 10**9) for i, rel in enumerate(EXTRA)]

        settings = SETTINGS + (["--search", "exact"] if "--search" in run_old(old, "index", "--help") else [])
        run_old(old, "index", str(photos), "--index", str(index), *settings)
        answers = {"commit": old_commit, "info": json.loads(run_old(old, "info", str(index), "--json")),
                   "queries": {p["path"]: json.loads(run_old(old, "query", str(index), str(photos / p["path"]),
                                                             "-k", str(len(indexed)), "--json"))["neighbors"]
                               for p in indexed}}

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(photos, out / "photos")
        shutil.copytree(extra, out / "extra")
        # The index as the old code left it, less its write lock (an empty file that every writer recreates).
        shutil.copytree(index, out / "index", ignore=shutil.ignore_patterns(".lock"))
        listing = {"commit": old_commit, "settings": settings, "root": str(photos),
                   "indexed": indexed, "extra": added}
        (out / "images.json").write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")
        (out / "old_answers.json").write_text(json.dumps(answers, indent=1) + "\n", encoding="utf-8")

    files = sorted(p for p in out.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"{p.stat().st_size:>9,}  {p.relative_to(REPO)}")
    print(f"{total:>9,}  bytes in {len(files)} files")
    if total > MAX_BYTES:
        raise SystemExit(f"The fixture is {total:,} bytes, over the {MAX_BYTES:,} allowed: index fewer images.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
