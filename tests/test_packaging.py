"""imgsim as an installable package: a wheel built from the sources installs into a fresh virtual environment,
where the ``imgsim`` console script indexes a few demo photos and reads the index back; and pyproject.toml
asks for exactly what requirements.txt installs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def requirement_lines(path: Path) -> set[str]:
    """The requirements of a pip file, comments and blank lines left out, spaces removed."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {re.sub(r"\s+", "", line) for line in lines if line}


def test_pyproject_asks_for_what_requirements_txt_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(project["dependencies"]) | set(extras["service"]) == requirement_lines(ROOT / "requirements.txt")
    assert set(extras["ray"]) == requirement_lines(ROOT / "requirements-ray.txt")
    assert not any(name.startswith("torch") for name in project["dependencies"])  # weights are read without it
    assert project["scripts"] == {"imgsim": "imgsim.cli:main"}


def run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return out


def test_wheel_installs_and_its_console_script_runs(tmp_path):
    # What a clean clone holds of the package, copied, so the build leaves nothing in the working tree.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("imgsim", "dashboard"):
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
        "-w", str(tmp_path / "wheels"), cwd=tmp_path)
    [wheel] = (tmp_path / "wheels").glob("imgsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"imgsim/cli.py", "imgsim/service/http.py", "imgsim/service/mcp.py", "imgsim/client.py",
            "imgsim/models/resnet50.py"} <= set(names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)

    # A fresh environment that sees the installed dependencies but not this checkout.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", str(venv), cwd=tmp_path)
    run(str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    where = run(str(venv / "bin" / "python"), "-c", "import imgsim; print(imgsim.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv))
    imgsim = str(venv / "bin" / "imgsim")
    helped = run(imgsim, "--help", cwd=tmp_path).stdout
    for command in ("index", "query", "dedup", "info", "cluster", "explain", "outliers", "serve", "mcp"):
        assert command in helped

    photos = tmp_path / "photos"
    demo = sorted(p for p in (ROOT / "data" / "demo").rglob("*.jpg"))[:6]
    for p in demo:
        (photos / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, photos / p.parent.name / p.name)
    index = tmp_path / "demo6.imgsim"
    run(imgsim, "index", str(photos), "--index", str(index), "--weights", "random", "--pooling", "avg", "--quiet",
        cwd=tmp_path)
    info = json.loads(run(imgsim, "info", str(index), "--json", cwd=tmp_path).stdout)
    assert (info["indexed"], info["pooling"], info["dims"], info["weights"]) == (6, "avg", 2048, "random")
