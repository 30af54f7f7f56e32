"""Peak memory an upload adds to the server: worst-case images just under the upload cap, one at a time
(each in a fresh process) and five at once, through the old decode path and the bounded upload path.

    python bench/upload_memory.py

"old" = decode.model_input + decode.thumbnail (what the dashboard did before issue 11); "bounded" =
decode.upload_model_input + decode.upload_thumbnail (what it does now). Figures are VmHWM (peak resident memory) deltas in MB, measured in a fresh process per row.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, machine, table

from PIL import Image

from imgsim import decode

CHILD = """
import sys, threading
sys.path.insert(0, {repo!r})
from imgsim import decode
data = [open(p, "rb").read() for p in {paths!r}]
hwm = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = hwm()  # not ru_maxrss: Linux carries the parent's peak across fork and exec
def one(d):
    try:
        if {bounded!r}:
            decode.upload_model_input(d); decode.upload_thumbnail(d)
        else:
            decode.model_input(d); decode.thumbnail(d)
    except decode.DecodeError as exc:
        print("refused:", exc)
threads = [threading.Thread(target=one, args=(d,)) for d in data]
for t in threads: t.start()
for t in threads: t.join()
print((hwm() - before) / 1024)
"""


def images(folder: Path) -> dict[str, Path]:
    """The worst cases: most bytes per pixel at the cap, for each decoder family; and the issue's PNG."""
    w, h = 8000, 5000  # 40.0 MP, the cap
    out = {}

    def save(name, im, fmt, **kw):
        path = folder / name
        im.save(path, fmt, **kw)
        out[name] = path

    save("rgba-40mp.png", Image.new("RGBA", (w, h), (10, 200, 30, 128)), "PNG")
    save("grey16-40mp.png", Image.new("I;16", (w, h), 40000), "PNG")
    noise = Image.effect_noise((w // 4, h // 4), 80).convert("RGB").resize((w, h))
    save("noise-40mp.jpg", noise, "JPEG", quality=85)
    save("rgb-40mp.webp", Image.new("RGB", (w, h), (50, 60, 70)), "WEBP")  # refused: WebP cap
    save("rgb-16mp.webp", Image.new("RGB", (4900, 3265), (50, 60, 70)), "WEBP")  # the largest WebP accepted
    save("rgb-40mp.tif", Image.new("RGB", (w, h), (50, 60, 70)), "TIFF", compression="tiff_deflate")
    save("issue-119.9mp.png", Image.new("RGB", (12000, 9990), (1, 2, 3)), "PNG")  # refused: over the cap
    return out


def peak(paths: list[Path], bounded: bool) -> str:
    code = CHILD.format(repo=str(REPO), paths=[str(p) for p in paths], bounded=bounded)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return f"error ({proc.stderr.strip().splitlines()[-1][:60]})"
    lines = proc.stdout.strip().splitlines()
    refused = any(line.startswith("refused:") for line in lines)
    return f"{float(lines[-1]):.0f}" + (" (refused)" if refused else "")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = images(Path(tmp))
        rows = []
        for name, path in found.items():
            rows.append([name, f"{path.stat().st_size / 1024:,.0f} KB", peak([path], False), peak([path], True)])
        worst = [found["rgba-40mp.png"]] * 5
        rows.append(["5 x rgba-40mp.png at once", "", peak(worst, False), peak(worst, True)])
        mixed = [found[n] for n in ("rgba-40mp.png", "grey16-40mp.png", "noise-40mp.jpg", "rgb-16mp.webp",
                                    "rgb-40mp.tif")]
        rows.append(["5 different at once", "", peak(mixed, False), peak(mixed, True)])
    print(f"Upload memory ({machine()}); cap {decode.UPLOAD_MAX_PIXELS:,} pixels, "
          f"{decode.LARGE_DECODES} large decodes at once")
    print(table(["upload", "file size", "old path: peak RSS added (MB)", "bounded path: peak RSS added (MB)"], rows))


if __name__ == "__main__":
    main()
