"""imgsim as an installable package: a wheel built from the sources installs into a fresh virtual environment,
where the ``imgsim`` console script indexes a few demo photos and reads the index back; pyproject.toml asks for
exactly what requirements.txt installs, split into the core and the ``service`` extra that only the HTTP API and
the MCP server need; the dashboard is not in the wheel (it runs from a checkout)."""

from __future__ import annotations

import ast
import importlib.metadata
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
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: An index written by an older imgsim (tests/test_compat.py): ``info`` reads it without its photos or a model.
OLD_INDEX = ROOT / "tests" / "data" / "index_c6b858a" / "index"


def requirement_lines(path: Path) -> set[str]:
    """The requirements of a pip file, comments and blank lines left out, spaces removed."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {re.sub(r"\s+", "", line) for line in lines if line}


def distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement: ``python-multipart>=0.0.20`` -> ``python-multipart``."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


SERVICE = {distribution(r) for r in PROJECT["optional-dependencies"]["service"]}


def service_imports() -> dict[str, str]:
    """``{top-level import name: distribution}`` of the service extra (``python_multipart``: python-multipart)."""
    return {name: dist for name, dists in importlib.metadata.packages_distributions().items()
            for dist in {distribution(d) for d in dists} & SERVICE}


def test_pyproject_asks_for_what_requirements_txt_installs():
    extras = PROJECT["optional-dependencies"]
    assert set(PROJECT["dependencies"]) | set(extras["service"]) == requirement_lines(ROOT / "requirements.txt")
    assert not {distribution(r) for r in PROJECT["dependencies"]} & SERVICE  # a package is core or the extra's
    assert set(extras["ray"]) == requirement_lines(ROOT / "requirements-ray.txt")
    assert not any(name.startswith("torch") for name in PROJECT["dependencies"])  # weights are read without it
    assert PROJECT["scripts"] == {"imgsim": "imgsim.cli:main"}


def test_only_the_service_transports_import_the_service_extra():
    names = service_imports()
    importers: dict[str, set[str]] = {}
    for path in sorted((ROOT / "imgsim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
            for module in modules:
                if module.partition(".")[0] in names:
                    importers.setdefault(names[module.partition(".")[0]], set()).add(
                        path.relative_to(ROOT).as_posix())
    # Each package of the extra is used (else it is not the service's), and only under imgsim/service/.
    assert set(importers) == SERVICE
    assert all(p.startswith("imgsim/service/") for paths in importers.values() for p in paths), importers


def without_service_extra(*args: str) -> subprocess.CompletedProcess:
    """``python -m imgsim ARGS`` where no package of the service extra can be imported."""
    code = (f"import sys\nfor name in {sorted(service_imports())!r}:\n    sys.modules[name] = None\n"
            "from imgsim.cli import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_core_install_runs_the_cli_and_says_what_serve_and_mcp_need():
    info = without_service_extra("info", str(OLD_INDEX), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["indexed"] == 12
    for command in ("serve", "mcp"):
        refused = without_service_extra(command, str(OLD_INDEX))
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"error: `{command}` needs the service extra, and ")
        assert "pip install 'imgsim[service]'" in refused.stderr and "Traceback" not in refused.stderr


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
    for package in ("imgsim", "dashboard", "static"):  # the dashboard's too, to show the wheel leaves them out
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "cache"))
    shutil.copy(ROOT / "app.py", src / "app.py")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
        "-w", str(tmp_path / "wheels"), cwd=tmp_path)
    [wheel] = (tmp_path / "wheels").glob("imgsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"imgsim/cli.py", "imgsim/service/http.py", "imgsim/service/mcp.py", "imgsim/client.py",
            "imgsim/models/resnet50.py"} <= set(names)
    assert not any(n.startswith(("tests/", "bench/", "dashboard/", "static/")) or n == "app.py" for n in names)

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
