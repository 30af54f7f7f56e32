"""The index on disk: a versioned, checked, atomically replaced directory of vectors and metadata.

Layout of ``INDEX_DIR``::

    CURRENT            name of the live generation (replaced atomically, last step of every write)
    gen-000007/        one complete generation, never modified once CURRENT points to it
        meta.json      format version, backbone, weights identity, pooling, dims, count, file sizes
        vectors.npy    float32 (count, dims), unit rows, memory-mappable
        manifest.json  one entry per row: relative path, size, mtime_ns, sha256 (below 10,000 rows)
        paths.txt      from 10,000 rows (format 2): relative paths, NUL-separated ...
        manifest.npy   ... and size, mtime_ns, sha256 per row in one structured array: 1M rows load in a second
        skipped.json   files that could not be used, with typed reasons
        *.npy          derived arrays (search projection, neighbour graph, 2-D map)
        metadata.parquet, keywords/   what is known about each image and its keyword index (optional: older
                       indexes have none, and readers ignore files they do not know; see imgsim.store.metadata)
    pending/           checkpoints of an unfinished run, so an interrupted run resumes
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from imgsim.errors import ImgsimError, Skipped

FORMAT = "imgsim-index"
FORMAT_VERSION = 2
CURRENT = "CURRENT"
#: From this many rows the manifest is stored column-wise (format 2): JSON of 1M entries takes seconds to load.
COLUMNAR_FROM = 10_000
PENDING = "pending"
_GEN = re.compile(r"^gen-(\d{6,})$")

try:  # POSIX only; elsewhere concurrent runs are simply not detected.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class IndexFormatError(ImgsimError):
    """The index directory cannot be read; the message says why and what to do."""


class IndexNotFound(IndexFormatError):
    """No index exists at that path."""


class IndexVersionError(IndexFormatError):
    """The index was written by a newer imgsim."""


class IndexCorruptError(IndexFormatError):
    """A file of the index is missing, truncated or inconsistent."""


@dataclass(frozen=True)
class Entry:
    """One indexed file, aligned with one row of the vectors."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


def now_iso() -> str:
    """The current UTC time as ISO 8601, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class Manifest(Sequence):
    """Rows' entries stored column-wise: 1M entries load in one read, :class:`Entry` objects made on access."""

    DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("sha256", "S64")])

    def __init__(self, paths: list[str], table: np.ndarray):
        if len(paths) != len(table):
            raise ValueError(f"{len(paths)} paths for {len(table)} manifest rows")
        self.paths = paths
        self.table = table

    @classmethod
    def from_entries(cls, entries) -> "Manifest":
        table = np.zeros(len(entries), dtype=cls.DTYPE)
        if len(entries):
            table["size"] = [e.size for e in entries]
            table["mtime_ns"] = [e.mtime_ns for e in entries]
            table["sha256"] = [e.sha256.encode("ascii") for e in entries]
        return cls([e.path for e in entries], table)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        t = self.table[i]
        return Entry(self.paths[i], int(t["size"]), int(t["mtime_ns"]), t["sha256"].decode("ascii"))

    def row_with_hash(self, sha256: str) -> int | None:
        """First row with this content hash, by one vectorised comparison (no 1M-entry dict)."""
        hits = np.flatnonzero(self.table["sha256"] == sha256.encode("ascii", "replace"))
        return int(hits[0]) if len(hits) else None


@dataclass
class Index:
    """A loaded generation of an index (read-only; vectors are memory-mapped)."""

    directory: Path
    generation: str
    meta: dict
    entries: list[Entry]
    skipped: list[Skipped]
    vectors: np.ndarray
    _rows: dict[str, int] = field(default_factory=dict, repr=False)
    _hashes: dict[str, int] = field(default_factory=dict, repr=False)
    _paths: list[str] = field(default_factory=list, repr=False)
    _stats: dict[str, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Read on every rerun of the dashboard: built once. A columnar manifest already holds the paths.
        self._paths = self.entries.paths if isinstance(self.entries, Manifest) else [e.path for e in self.entries]
        self._rows = {}  # path -> row, built on the first lookup that the sorted order cannot answer
        self._hashes = {}
        if not isinstance(self.entries, Manifest):
            for i, e in enumerate(self.entries):
                self._hashes.setdefault(e.sha256, i)

    @property
    def root(self) -> Path:
        return Path(self.meta["root"])

    @property
    def pooling(self) -> str:
        return self.meta["pooling"]

    @property
    def dims(self) -> int:
        return int(self.meta["dims"])

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def weights(self) -> dict:
        return self.meta["weights"]

    @property
    def is_random(self) -> bool:
        return self.meta["weights"]["mode"] == "random"

    @property
    def paths(self) -> list[str]:
        return self._paths

    def row_of(self, rel_path: str) -> int | None:
        """The row of an indexed relative path, or None.

        Rows are written in path order, so a binary search finds them without a dictionary of every path
        (0.55 s to build at 1M, on each server start); any other order still gets the right answer."""
        paths = self._paths
        i = bisect.bisect_left(paths, rel_path)
        if i < len(paths) and paths[i] == rel_path:
            return i
        if not self._rows and paths:
            self._rows = {p: r for r, p in enumerate(paths)}
        return self._rows.get(rel_path)

    def row_with_hash(self, sha256: str) -> int | None:
        """The first row whose file has this content hash, or None."""
        if isinstance(self.entries, Manifest):
            return self.entries.row_with_hash(sha256)
        return self._hashes.get(sha256)

    def record_files(self) -> None:
        """Remember size, mtime and inode of this generation's files, as they are when it is opened."""
        self._stats = _file_stats(self.directory / self.generation)

    def changed_on_disk(self) -> list[str]:
        """Files of this generation that changed, vanished or appeared since it was opened (a few stat calls).

        A memory-mapped file truncated under a running process kills it with SIGBUS on the next read, so a
        server checks this before touching the arrays again.
        """
        now = _file_stats(self.directory / self.generation)
        return sorted(name for name in set(now) | set(self._stats) if now.get(name) != self._stats.get(name))

    def has_array(self, name: str) -> bool:
        return name in self.meta.get("arrays", [])

    def array(self, name: str) -> np.ndarray:
        """A derived array stored with this generation (memory-mapped)."""
        if not self.has_array(name):
            raise IndexCorruptError(f"Index at {self.directory} has no '{name}' data; re-run `imgsim index` to rebuild it.")
        return _load_npy(self.directory / self.generation / f"{name}.npy", self.directory)


def pack_blobs(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length byte strings as one uint8 array plus offsets (row i is blob[off[i]:off[i+1]])."""
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def unpack_blob(blob: np.ndarray, offsets: np.ndarray, row: int) -> bytes:
    """One byte string stored with :func:`pack_blobs`."""
    return bytes(blob[offsets[row]:offsets[row + 1]])


def _file_stats(gen_dir: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    try:
        with os.scandir(gen_dir) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out[e.name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        pass
    return out


def _load_npy(path: Path, index_dir: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexCorruptError(f"Index file {path.name} in {index_dir} is damaged ({exc}). "
                                f"Rebuild it with `python -m imgsim index SRC_DIR --index {index_dir} --rebuild`.") from None


def _read_json(path: Path, index_dir: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"Index at {index_dir} is missing {path.name}. Rebuild it with "
                                f"`python -m imgsim index SRC_DIR --index {index_dir} --rebuild`.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"Index file {path.name} in {index_dir} is not valid JSON ({exc}). Rebuild it with "
                                f"`python -m imgsim index SRC_DIR --index {index_dir} --rebuild`.") from None


def index_exists(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a committed index (valid or not)."""
    return (Path(directory) / CURRENT).is_file()


def index_root(directory: str | os.PathLike) -> Path:
    """The folder an index was built from, read from its live generation's metadata alone (cheap at any size)."""
    d = Path(directory).expanduser()
    for attempt in range(3):
        generation = (d / CURRENT).read_text(encoding="utf-8").strip()
        try:
            meta = _read_json(d / generation / "meta.json", d)
            break
        except IndexCorruptError:  # replaced by a writer between the two reads (see load_index), or damaged
            if attempt == 2 or (d / CURRENT).read_text(encoding="utf-8").strip() == generation:
                raise
    if not isinstance(meta, dict) or "root" not in meta:
        raise IndexCorruptError(f"{d / generation / 'meta.json'} is not imgsim index metadata. Rebuild it with "
                                f"`python -m imgsim index SRC_DIR --index {d} --rebuild`.")
    return Path(meta["root"])


def load_index(directory: str | os.PathLike) -> Index:
    """Load the live generation, checking version, file sizes and shapes before trusting anything."""
    d = Path(directory).expanduser()
    for attempt in range(3):
        if not (d / CURRENT).is_file():
            # What a first run leaves before its first commit (lock, checkpoints, unfinished folder) is no foreign data.
            if d.is_dir() and any(not (p.name.startswith(".") or p.name == PENDING) for p in d.iterdir()):
                raise IndexNotFound(f"{d} is not an imgsim index (it has no {CURRENT} file).")
            raise IndexNotFound(f"No index at {d}. Create one with `python -m imgsim index SRC_DIR --index {d}`.")
        generation = (d / CURRENT).read_text(encoding="utf-8").strip()
        try:
            return _load_generation(d, generation)
        except IndexCorruptError:
            # A writer may have switched CURRENT and removed the generation being opened: that is no damage,
            # so open the new one; a generation that is still current and damaged is reported.
            try:
                now = (d / CURRENT).read_text(encoding="utf-8").strip()
            except OSError:
                now = generation
            if attempt == 2 or now == generation:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _load_generation(d: Path, generation: str) -> Index:
    rebuild = f"Rebuild it with `python -m imgsim index SRC_DIR --index {d} --rebuild`."
    gen_dir = d / generation
    if not _GEN.match(generation) or not gen_dir.is_dir():
        raise IndexCorruptError(f"Index at {d} points to a missing generation '{generation}'. {rebuild}")
    opened = _file_stats(gen_dir)  # before the size checks: a change after them is then still detected
    meta = _read_json(gen_dir / "meta.json", d)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexCorruptError(f"{gen_dir / 'meta.json'} is not imgsim index metadata. {rebuild}")
    version = meta.get("version")
    if not isinstance(version, int):
        raise IndexCorruptError(f"Index at {d} has no format version. {rebuild}")
    if version > FORMAT_VERSION:
        raise IndexVersionError(
            f"Index at {d} was written by a newer imgsim (index format {version}); this imgsim reads format "
            f"{FORMAT_VERSION} and older. Upgrade imgsim (pip install -U -r requirements.txt) or index into a new folder.")
    for name, size in meta.get("files", {}).items():
        path = gen_dir / name
        if not path.is_file():
            raise IndexCorruptError(f"Index at {d} is missing {name}. {rebuild}")
        actual = path.stat().st_size
        if actual != size:
            raise IndexCorruptError(f"Index file {name} in {d} is truncated or altered: expected {size:,} bytes, "
                                    f"found {actual:,}. {rebuild}")
    entries = _read_manifest(gen_dir, d, version)
    skipped = [Skipped.from_json(s) for s in _read_json(gen_dir / "skipped.json", d)]
    vectors = _load_npy(gen_dir / "vectors.npy", d)
    expected = (meta["count"], meta["dims"])
    if vectors.shape != expected or len(entries) != meta["count"] or vectors.dtype != np.float32:
        raise IndexCorruptError(f"Index at {d} is inconsistent: {len(entries)} manifest entries, vectors "
                                f"{vectors.shape} {vectors.dtype}, metadata says {expected}. {rebuild}")
    index = Index(d, generation, meta, entries, skipped, vectors)
    index._stats = opened
    return index


def _read_manifest(gen_dir: Path, index_dir: Path, version: int):
    """A JSON list of entries (format 1, and small format-2 indexes), or NUL-separated paths plus one array."""
    if version < 2 or not (gen_dir / "paths.txt").exists():
        return [Entry(**e) for e in _read_json(gen_dir / "manifest.json", index_dir)]
    try:
        text = (gen_dir / "paths.txt").read_bytes().decode("utf-8")
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"Index at {index_dir} has a missing or damaged paths.txt ({exc}). Rebuild it with "
                                f"`python -m imgsim index SRC_DIR --index {index_dir} --rebuild`.") from None
    paths = text.split("\0") if text else []
    try:
        table = np.load(gen_dir / "manifest.npy", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IndexCorruptError(f"Index file manifest.npy in {index_dir} is damaged ({exc}). Rebuild it with "
                                f"`python -m imgsim index SRC_DIR --index {index_dir} --rebuild`.") from None
    if len(paths) != len(table) or table.dtype != Manifest.DTYPE:
        raise IndexCorruptError(f"Index at {index_dir} is inconsistent: {len(paths)} paths, {len(table)} manifest "
                                f"rows. Rebuild it with `python -m imgsim index SRC_DIR --index {index_dir} --rebuild`.")
    return Manifest(paths, table)


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk (what an atomic replace needs before and after)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")


class GenerationWriter:
    """Writes a new generation into a hidden folder; :meth:`commit` makes it live atomically.

    Until the final ``os.replace`` of ``CURRENT`` a crash leaves the previous generation in charge; the
    unfinished folder is removed by the next write.
    """

    def __init__(self, directory: str | os.PathLike, count: int, dims: int):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        self.tmp.mkdir()
        self.count, self.dims = count, dims
        self.arrays: list[str] = []
        shape = (count, dims)
        if count:
            self.vectors = np.lib.format.open_memmap(self.tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=shape)
        else:
            self.vectors = np.zeros(shape, dtype=np.float32)

    def copy_rows(self, source: np.ndarray, pairs: list[tuple[int, int]]) -> None:
        """Copy ``source`` rows into the new vectors, ``(new_row, old_row)`` pairs sorted by new row.

        Runs of consecutive rows are copied file to file by the kernel (``os.copy_file_range``), so a
        1M-row update neither reads 8 GB through Python nor holds both generations in memory.
        """
        runs: list[list[int]] = []  # [new_start, old_start, length]
        for new, old in pairs:
            if runs and new == runs[-1][0] + runs[-1][2] and old == runs[-1][1] + runs[-1][2]:
                runs[-1][2] += 1
            else:
                runs.append([new, old, 1])
        fast = (isinstance(self.vectors, np.memmap) and isinstance(source, np.memmap) and hasattr(os, "copy_file_range")
                and source.dtype == self.vectors.dtype and source.shape[1:] == self.vectors.shape[1:])
        if fast:
            self.vectors.flush()
            row_bytes = self.vectors.dtype.itemsize * int(np.prod(self.vectors.shape[1:]))
            try:
                with open(source.filename, "rb") as src, open(self.vectors.filename, "r+b") as dst:
                    for new, old, length in runs:
                        todo, src_off = length * row_bytes, source.offset + old * row_bytes
                        dst_off = self.vectors.offset + new * row_bytes
                        while todo:
                            done = os.copy_file_range(src.fileno(), dst.fileno(), todo, src_off, dst_off)
                            if done <= 0:
                                raise OSError(f"copy_file_range copied nothing at row {old}")
                            todo, src_off, dst_off = todo - done, src_off + done, dst_off + done
                return
            except OSError as exc:
                # Some file systems (network, FUSE, older kernels) cannot copy ranges: copy through memory.
                if exc.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL):
                    raise
        for new, old, length in runs:
            self.vectors[new:new + length] = source[old:old + length]

    def save_file(self, name: str, write) -> None:
        """Store a non-array file with this generation: ``write(path)`` creates it (e.g. an ANN index)."""
        write(self.tmp / name)

    def save_array(self, name: str, array: np.ndarray) -> None:
        """Store a derived array with this generation."""
        np.save(self.tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        self.arrays.append(name)

    def commit(self, meta: dict, entries: list[Entry], skipped: list[Skipped]) -> str:
        """Write metadata, flush everything to disk and switch ``CURRENT``; returns the generation name."""
        if len(entries) != self.count:
            raise ValueError(f"{len(entries)} entries for {self.count} vectors")
        if isinstance(self.vectors, np.memmap):
            self.vectors.flush()
            del self.vectors
        else:
            np.save(self.tmp / "vectors.npy", self.vectors, allow_pickle=False)
        if len(entries) >= COLUMNAR_FROM:
            manifest = entries if isinstance(entries, Manifest) else Manifest.from_entries(entries)
            (self.tmp / "paths.txt").write_bytes("\0".join(manifest.paths).encode("utf-8"))
            np.save(self.tmp / "manifest.npy", manifest.table, allow_pickle=False)
        else:
            _write_json(self.tmp / "manifest.json", [asdict(e) for e in entries])
        _write_json(self.tmp / "skipped.json", [s.to_json() for s in skipped])
        # Every file, those in folders too (the keyword index): readers check each one's size.
        files = {p.relative_to(self.tmp).as_posix(): p.stat().st_size for p in sorted(self.tmp.rglob("*")) if p.is_file()}
        for name in files:
            fsync(self.tmp / name)
        for folder in (p for p in self.tmp.rglob("*") if p.is_dir()):
            fsync(folder)
        generation = _next_generation(self.directory)
        meta = dict(meta, format=FORMAT, version=FORMAT_VERSION, generation=generation, count=self.count,
                    dims=self.dims, arrays=sorted(self.arrays), files=files)
        _write_json(self.tmp / "meta.json", meta)
        fsync(self.tmp / "meta.json")
        fsync(self.tmp)
        os.rename(self.tmp, self.directory / generation)
        fsync(self.directory)
        pointer = self.directory / f"{CURRENT}.tmp"
        pointer.write_text(generation + "\n", encoding="utf-8")
        fsync(pointer)
        os.replace(pointer, self.directory / CURRENT)
        fsync(self.directory)
        remove_stale(self.directory)
        return generation

    def abort(self) -> None:
        """Discard the unfinished generation."""
        self.vectors = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _next_generation(directory: Path) -> str:
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := _GEN.match(p.name))]
    return f"gen-{max(numbers, default=0) + 1:06d}"


def remove_stale(directory: str | os.PathLike) -> None:
    """Delete unfinished folders and generations that ``CURRENT`` no longer names."""
    d = Path(directory)
    live = (d / CURRENT).read_text(encoding="utf-8").strip() if (d / CURRENT).is_file() else None
    for p in d.iterdir():
        if p.name.startswith(".tmp-") or (_GEN.match(p.name) and p.name != live):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the index's write lock; a second writer gets a clear error instead of a corrupted index."""
    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(d / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImgsimError(f"Another imgsim run is writing the index at {d}; wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- checkpoints of an unfinished run -------------------------------------------------------------

def write_checkpoint(directory: str | os.PathLike, config: str, entries: list[Entry], vectors: np.ndarray) -> None:
    """Save finished work of a running build so that a killed run can resume from it."""
    pending = Path(directory) / PENDING
    pending.mkdir(parents=True, exist_ok=True)
    name = f"chunk-{uuid.uuid4().hex}"
    tmp = pending / f".{name}.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, vectors=np.asarray(vectors, dtype=np.float32),
                 entries=np.array(json.dumps([asdict(e) for e in entries])), config=np.array(config))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, pending / f"{name}.npz")


def _settings_file(directory: str | os.PathLike, config: str) -> Path:
    return Path(directory) / PENDING / f"settings-{hashlib.sha1(config.encode('utf-8')).hexdigest()[:16]}.json"


def write_checkpoint_settings(directory: str | os.PathLike, config: str, settings: dict) -> None:
    """Record what the model of a running build resolved to (weights identity and label, dims, preset), so that
    a resumed run whose work is all in checkpoints records them too, without building the model again."""
    path = _settings_file(directory, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    _write_json(tmp, {"config": config, **settings})
    fsync(tmp)
    os.replace(tmp, path)


def read_checkpoint_settings(directory: str | os.PathLike, config: str) -> dict | None:
    """What :func:`write_checkpoint_settings` recorded for these model settings, or None."""
    try:
        data = json.loads(_settings_file(directory, config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("config") == config else None


def read_checkpoints(directory: str | os.PathLike, config: str) -> dict[tuple[str, int, int], tuple[Entry, np.ndarray]]:
    """Finished work of earlier unfinished runs with the same model settings, keyed by (path, size, mtime_ns).

    Damaged checkpoint files (a run killed while writing one) are ignored: that work is simply redone.
    """
    found: dict[tuple[str, int, int], tuple[Entry, np.ndarray]] = {}
    pending = Path(directory) / PENDING
    if not pending.is_dir():
        return found
    for path in sorted(pending.glob("chunk-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["config"]) != config:
                    continue
                vectors = np.array(data["vectors"])
                entries = [Entry(**e) for e in json.loads(str(data["entries"]))]
        except (ValueError, OSError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
            continue
        if len(entries) != len(vectors):
            continue
        for entry, vector in zip(entries, vectors):
            found[(entry.path, entry.size, entry.mtime_ns)] = (entry, vector)
    return found


def clear_checkpoints(directory: str | os.PathLike) -> None:
    """Remove checkpoints once their work is committed."""
    shutil.rmtree(Path(directory) / PENDING, ignore_errors=True)
