"""Kill at any moment: render, evaluate and training are SIGKILLed at random moments, rerun with the
same command, and end with the outputs of an uninterrupted run.

After every kill: each file under its final name is complete and equal to the uninterrupted run's
(so no partial file is ever visible); after the final rerun the folders hold the same files with the
same content, and per-item files that existed at a kill were not written again (same inode and
mtime: nothing done twice). Training: at most one epoch reported in metrics.json is missing from the
checkpoint (the one whose asynchronous save was under way: at most the current epoch is lost) and
the final weights equal the uninterrupted run's.

Timing fields (seconds, images per second) differ between any two runs and are left out of the
comparisons. JAXCAM_SLOW_TESTS=1 adds more kill moments per job.
"""
import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import random_pngs

ROOT = Path(__file__).resolve().parents[2]
SLOW = bool(os.environ.get("JAXCAM_SLOW_TESTS"))
KILLS = 5 if SLOW else 2
TIMING = {"seconds", "warm", "seconds_per_image", "images_per_second", "trained_minutes", "wall_seconds",
          "s/img (map)"}


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"],  # tests/conftest.py: per run
                # Every compilation of the uninterrupted run is kept (not only those over 0.5 s): each rerun of
                # the same command then loads them instead of compiling again (the same executables: no check
                # changes, 3 process starts of compiling per job are saved).
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", TQDM_DISABLE="1")


def _script(name):
    return str(ROOT / "scripts" / name)


def run(cmd, kill_when=None):
    """Run `cmd`; with `kill_when` (a function of the elapsed seconds -> bool, polled every 20 ms),
    SIGKILL it when that turns true (if it is still running). Returns (rc, seconds, log)."""
    start = time.perf_counter()
    if kill_when is None:
        proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
        return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if kill_when(time.perf_counter() - start):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    return proc.returncode, time.perf_counter() - start, ""


# -------------------------------------------------------------------- comparing outputs


def content(path: Path, root: Path):
    """A file's content for comparison: pixels for PNGs, arrays for .npz, parsed rows for CSV/JSON/MD
    with timing fields dropped; raw bytes otherwise (the run folder's own path replaced by <out>).
    Raises if the file is truncated or corrupt."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        with Image.open(path) as img:
            img.load()
            return np.asarray(img).tobytes()
    if suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k].tobytes() for k in z.files if k not in TIMING}
    if suffix == ".csv":
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(io.StringIO(_text(path, root)))]
    if suffix == ".json":
        data = json.loads(_text(path, root))
        strip = lambda d: {k: v for k, v in d.items() if k not in TIMING} if isinstance(d, dict) else d  # noqa: E731
        return [strip(d) for d in data] if isinstance(data, list) else strip(data)
    if suffix == ".html":  # a page (jaxcam.viz.pages): drop its wall-clock cells and rows (class "timing")
        return re.sub(r'<(td|tr) class="[^"]*timing[^"]*".*?</\1>', "", _text(path, root), flags=re.S)
    if suffix == ".md":  # markdown table: drop the timing column
        rows = [line.split("|") for line in _text(path, root).splitlines()]
        return [r[:-2] for r in rows]
    return path.read_bytes().replace(str(root).encode(), b"<out>")


def _text(path: Path, root: Path) -> str:
    return path.read_text().replace(str(root), "<out>")


def files(folder: Path, skip=()):
    """Final-named files under `folder` (temp files .tmp-* are not final names), relative paths."""
    return {str(p.relative_to(folder)): p for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-") and not any(s in p.parts for s in skip)}


def kill_and_rerun(cmd_for, reference: Path, work: Path, total: int, progress, seed: int, per_item, skip=(),
                   check_after_kill=None, growing=()):
    """Kill `cmd_for(work)` at KILLS random moments (one run after another, in the same folder), then
    rerun it to the end. A moment: once ``progress(work)`` (e.g. files written) reaches a random k in
    [0, total), plus a random 0-0.5 s. Every file visible after a kill must equal the reference's;
    per-item files seen after a kill must never be written again. `growing` files (a history rewritten
    every epoch) must be complete after a kill and their rows a prefix of the reference's."""
    rng = random.Random(seed)
    ref = files(reference, skip)
    seen = {}  # per-item file -> (inode, mtime) when first seen after a kill
    for k in range(KILLS):
        target, extra = rng.randrange(total), rng.uniform(0, 0.5)
        reached = []

        def kill_when(elapsed):
            if not reached and progress(work) >= target:
                reached.append(elapsed)
            return bool(reached) and elapsed >= reached[0] + extra

        rc, _, _ = run(cmd_for(work), kill_when)
        where = f"kill {k} (progress {target} + {extra:.2f} s, rc {rc})"
        for rel, path in files(work, skip).items():
            assert rel in ref, f"{where}: unexpected file {rel}"
            if rel in growing:
                got, want = content(path, work), content(ref[rel], reference)  # content() raises on a truncated file
                assert not isinstance(got, list) or got == want[: len(got)], f"{where}: {rel} is not a prefix"
                continue
            assert content(path, work) == content(ref[rel], reference), f"{where}: {rel} differs (partial?)"
            if per_item(rel):
                stat = path.stat()
                seen.setdefault(rel, (stat.st_ino, stat.st_mtime_ns))
        if check_after_kill:
            check_after_kill(work)
    rc, _, log = run(cmd_for(work))
    assert rc == 0, log[-3000:]
    final = files(work, skip)
    assert sorted(final) == sorted(ref)
    for rel, path in final.items():
        assert content(path, work) == content(ref[rel], reference), f"{rel} differs from the uninterrupted run"
    for rel, (ino, mtime) in seen.items():
        stat = final[rel].stat()
        assert (stat.st_ino, stat.st_mtime_ns) == (ino, mtime), f"{rel} was written again after the kill"
    assert not [p for p in work.rglob(".tmp-*")], "temporary files left behind"
    return seen


# -------------------------------------------------------------------------------- jobs


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for p in folder.glob(pattern) if not p.name.startswith(".tmp-"))


def _epochs(folder: Path) -> int:
    """Epochs reported so far (metrics.json), -1 before the first."""
    try:
        return len(json.loads((folder / "metrics.json").read_text()))
    except (OSError, ValueError):
        return 0


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return random_pngs(tmp_path_factory.mktemp("kill-images"), [f"img{i:02d}.png" for i in range(12)], (36, 40, 3))


def test_render_killed_and_rerun(images, tmp_path):
    def cmd(out):
        return [sys.executable, _script("render.py"), str(images), "--method", "grad_cam,fast_ablation",
                "--model", "resnet20", "--weights", "none", "--image-size", "32", "--batch-size", "2",
                "--out", str(out)]

    rc, _, log = run(cmd(tmp_path / "ref"))
    assert rc == 0, log[-3000:]
    # triptychs, grid.png, render.json, index.html and its pictures (12 originals, 12 x 2 heatmaps)
    assert len(files(tmp_path / "ref")) == 12 * 2 + 3 + 12 * 3
    per_item = lambda rel: rel != "grid.png" and rel.endswith((".png", ".jpg"))  # noqa: E731
    seen = kill_and_rerun(cmd, tmp_path / "ref", tmp_path / "work", 24, lambda w: _count(w, "*_*.png"), 1, per_item)
    assert seen, "no kill happened while images were being written"


def test_evaluate_killed_and_rerun(images, tmp_path):
    def cmd(out):
        # test_evaluate's settings: the compiled metrics come from the run's compilation cache
        return [sys.executable, _script("evaluate.py"), "--data", str(images), "--model", "resnet20",
                "--weights", "random", "--image-size", "32", "--method", "grad_cam", "--batch-size", "2",
                "--steps", "2", "--baseline", "zeros", "--percentiles", "50", "--out", str(out)]

    rc, _, log = run(cmd(tmp_path / "ref"))
    assert rc == 0, log[-3000:]
    seen = kill_and_rerun(cmd, tmp_path / "ref", tmp_path / "work", 12, lambda w: _count(w, "cache/*/*/*.npz"), 2,
                          per_item=lambda rel: rel.endswith(".npz"))
    assert seen, "no kill happened while results were being written"


def _tree(root, size=16, per_class=(6, 3)):
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.full((size, size, 3), c * 25, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")


def test_training_killed_and_rerun(tmp_path):
    from jaxcam import train as train_lib

    _tree(tmp_path / "data")

    def cmd(out):
        return [sys.executable, _script("train.py"), "--data", str(tmp_path / "data"), "--model", "resnet20",
                "--image-size", "16", "--batch-size", "20", "--lr", "0.05", "--epochs", "4", "--gallery", "2",
                "--cam-layers", "layer3", "--out", str(out)]

    def at_most_the_current_epoch_lost(work):
        metrics = work / "metrics.json"
        reported = len(json.loads(metrics.read_text())) if metrics.exists() else 0
        meta = train_lib.Checkpoints(str(work / "checkpoints")).latest_meta() if (work / "checkpoints").exists() else None
        saved = meta["epoch"] + 1 if meta else 0
        # The checkpoint of the epoch just reported may still be in flight (orbax saves asynchronously):
        # a kill then loses that epoch, never more.
        assert reported <= saved + 1, f"{reported} epochs reported but only {saved} in the checkpoint"

    rc, _, log = run(cmd(tmp_path / "ref"))
    assert rc == 0, log[-3000:]
    kill_and_rerun(cmd, tmp_path / "ref", tmp_path / "work", 4, _epochs, 3, per_item=lambda rel: False,
                   skip=("checkpoints",), check_after_kill=at_most_the_current_epoch_lost,
                   growing=("metrics.json", "metrics.csv", "curves.png", "index.html"))
    a, b = (train_lib.load_checkpoint(str(tmp_path / d / "checkpoints" / "last")) for d in ("ref", "work"))
    import jax

    for x, y in zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
