"""What the browser draws of a large map: a bounded sample of points, a density layer for the rest, and
hover previews cut into sprite-sheet tiles of the drawn points (so the first render does not grow with N)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from imgsim.collection import Collection

#: Points drawn individually; beyond this a deterministic sample is drawn over a density layer.
MAP_POINTS = 20_000
#: Previews per sprite-sheet tile (a 32 x 32 grid).
TILE_ROWS = 1024
TILE_COLUMNS = 32


def drawn_rows(count: int, limit: int = MAP_POINTS, random_state: int = 0) -> np.ndarray:
    """Rows drawn as points: all of them, or a fixed random sample of ``limit`` rows (sorted)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(random_state).choice(count, limit, replace=False))


def density(xy: np.ndarray, bins: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x centres, y centres, counts[y, x]) of every point: one O(N) pass, drawn as a heatmap under the sample."""
    xy = np.asarray(xy, dtype=np.float64)
    counts, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    return (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2, counts.T


def tiles_for(rows: np.ndarray, per_tile: int = TILE_ROWS) -> list[np.ndarray]:
    """The drawn rows cut into consecutive tiles: position p in ``rows`` is cell p % per_tile of tile p // per_tile."""
    rows = np.asarray(rows)
    return [rows[start:start + per_tile] for start in range(0, len(rows), per_tile)]


def publish_previews(col: "Collection", cache: Path, url: str, prefix: str, generation: str,
                     log: logging.Logger | None = None) -> dict | None:
    """Write the previews of the drawn points as sprite-sheet JPEG tiles into ``cache`` (served at ``url``), for
    the browser to fetch each only when a point on it is first hovered.

    The first tile is written now, the others by a background thread, so the first render does not grow with
    the collection. Tiles are named ``PREFIX-GENERATION[-tNNNN].jpg``; other generations' tiles of ``prefix`` are
    removed. None when the index has no previews or ``cache`` cannot be written: hovering then shows names only.
    """
    if not col.has_previews():
        return None
    rows = drawn_rows(col.count)
    cell = 64 if len(rows) <= 10000 else 40
    tiles = tiles_for(rows)
    names = [f"{prefix}-{generation}.jpg"] + [f"{prefix}-{generation}-t{t:04d}.jpg" for t in range(1, len(tiles))]

    def write(t: int) -> None:
        if not (cache / names[t]).exists():
            tmp = cache / f".{names[t]}.tmp"
            col.preview_tile(tiles[t], cell, TILE_COLUMNS).save(tmp, format="JPEG", quality=80)
            os.replace(tmp, cache / names[t])

    try:
        cache.mkdir(parents=True, exist_ok=True)
        write(0)
        for old in cache.glob(f"{prefix}-*.jpg"):
            if old.name not in names:
                old.unlink(missing_ok=True)
    except OSError:
        return None
    if len(tiles) > 1:
        def rest() -> None:
            try:
                for t in range(1, len(tiles)):
                    write(t)
            except OSError:
                (log or logging.getLogger(__name__)).warning("could not write preview tiles to %s", cache)

        threading.Thread(target=rest, daemon=True, name="imgsim-preview-tiles").start()
    return {"urls": [url + name for name in names], "per_tile": TILE_ROWS, "columns": TILE_COLUMNS, "cell": cell}


#: In each process's folder of previews: the process id of the server that owns it.
OWNER = ".owner"
#: Beside it: ``PID START HOST``, the owner's start time (clock ticks since boot) and host name. A process id
#: alone is reused: by a later server after a restart, and by servers in other containers sharing a checkout.
STARTED = ".started"


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _start_time(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot ('' where /proc cannot say)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name before ")" may hold spaces


def _process_record(pid: int) -> str:
    return f"{pid} {_start_time(pid)} {socket.gethostname()}"


def _owner(folder: Path) -> int:
    """The process id that owns a folder of previews (0: none says so)."""
    try:
        return int((folder / OWNER).read_text().strip())
    except (OSError, ValueError):
        return 0


def _removable(folder: Path) -> bool:
    """Whether a folder of previews is this process's (an earlier one) or its owner has ended."""
    pid = _owner(folder)
    try:
        record = (folder / STARTED).read_text().split()
    except OSError:
        record = []
    if len(record) != 3 or record[0] != str(pid):  # an earlier version's folder: its process id alone
        return not _running(pid)
    if record[2] != socket.gethostname():  # another container's or machine's server: this one cannot tell
        return False
    alive = _running(pid) and _start_time(pid) == record[1]  # not ended, nor its id another process's now
    return not alive or pid == os.getpid()


def own_previews(cache: Path) -> Path:
    """A new folder of ``cache`` for this process's previews, named by a secret (its URLs cannot be guessed).

    Several servers may run from one checkout: only the folders of server processes that have ended, this
    process's earlier ones (its caches were cleared) and loose files of earlier versions are removed, never
    those of another server still running, even one with this process's id (another container's, or a
    server before a restart whose id this one got: told apart by start time and host).
    """
    if cache.is_dir():
        for old in cache.iterdir():
            if old.name.startswith("."):  # a folder another process is making now
                continue
            if old.is_file():
                old.unlink(missing_ok=True)
            elif old.is_dir() and _removable(old):
                shutil.rmtree(old, ignore_errors=True)
    name = secrets.token_hex(16)
    making = cache / f".{name}"
    making.mkdir(parents=True)
    (making / OWNER).write_text(str(os.getpid()))
    (making / STARTED).write_text(_process_record(os.getpid()))
    return making.rename(cache / name)  # named only once it says whose it is
