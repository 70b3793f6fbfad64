"""2 local jax.distributed processes vs 1 process: same files, same maps, and the wall time of each.

    python benchmarks/multiprocess.py                        # 64 generated images, resnet20 32 px
    python benchmarks/multiprocess.py --images 128 --methods grad_cam,ablation_cam --processes 2

Runs ``jaxcam render --save-maps`` on the same generated images once with one process and once
with ``--processes N`` (N cooperating jax.distributed processes over gloo on this machine, each
with its own CPU device), then compares: the set of files, every PNG's pixels, and every map
(max abs difference). Prints one markdown row per run. The wall time includes each process's
start (Python, jax import, model build, compilation), which N processes pay N times; on a
machine shared with other jobs the times are provisional.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i:04d}.png")


def render(images: Path, out: Path, methods: str, batch: int, extra: list) -> float:
    cmd = [sys.executable, "-m", "jaxcam.cli.render", str(images), "--method", methods, "--model", "resnet20",
           "--weights", "none", "--image-size", "32", "--batch-size", str(batch), "--save-maps", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), TQDM_DISABLE="1")
    start = time.perf_counter()
    res = subprocess.run(cmd + extra, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd + extra)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return seconds


def compare(a: Path, b: Path) -> dict:
    from PIL import Image

    fa, fb = sorted(p.name for p in a.iterdir()), sorted(p.name for p in b.iterdir())
    same_files = fa == fb
    png_equal, map_diff, maps = 0, 0.0, 0
    for name in fa:
        if name not in fb:
            continue
        if name.endswith(".png"):
            with Image.open(a / name) as x, Image.open(b / name) as y:
                png_equal += np.array_equal(np.asarray(x), np.asarray(y))
        elif name.endswith(".npy"):
            x, y = np.load(a / name), np.load(b / name)
            map_diff = max(map_diff, float(np.abs(x - y).max()))
            maps += 1
    pngs = sum(n.endswith(".png") for n in fa)
    return {"same_files": same_files, "files": len(fa), "pngs_equal": f"{png_equal}/{pngs}", "maps": maps,
            "max_map_diff": map_diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--methods", default="grad_cam,ablation_cam")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--work", default=None, help="folder for the images and outputs (default: a temp folder)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="jaxcam-mp-"))
    make_images(work / "images", args.images)
    load0 = os.getloadavg()[0]
    t1 = render(work / "images", work / "one", args.methods, args.batch_size, [])
    tn = render(work / "images", work / "many", args.methods, args.batch_size, ["--processes", str(args.processes)])
    load1 = os.getloadavg()[0]
    c = compare(work / "one", work / "many")
    ok = c["same_files"] and c["pngs_equal"].split("/")[0] == c["pngs_equal"].split("/")[1] and c["max_map_diff"] <= 1e-5
    print(f"| processes | images | methods | wall time | same files | PNGs pixel-equal | maps max abs diff | load before/after |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| 1 | {args.images} | {args.methods} | {t1:.1f} s | - | - | - | {load0:.1f} / {load1:.1f} |")
    print(f"| {args.processes} | {args.images} | {args.methods} | {tn:.1f} s | {c['same_files']} ({c['files']}) | "
          f"{c['pngs_equal']} | {c['max_map_diff']:.2e} ({c['maps']} maps) | {load0:.1f} / {load1:.1f} |")
    print(f"{'OK' if ok else 'MISMATCH'}: outputs in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
