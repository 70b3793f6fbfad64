"""jaxcam.distributed: shares, flags, and 2 real jax.distributed processes (gloo) = 1 process.

Run as a script, this file is the driver the test launches: it explains its share of 16 images
with Grad-CAM on a tiny model, gathers every process's maps with `combine`, and process 0 writes them.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def driver(argv=None) -> int:
    from jaxcam import distributed

    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--fail", type=int, default=None, help="this process id exits with status 3")
    distributed.add_arguments(p)
    args = p.parse_args(argv)
    status = distributed.launch(args, argv, entry=HERE)
    if status is not None:
        return status
    distributed.initialize(args)
    import jax

    import jaxcam

    from tests.helpers import tiny_images, tiny_model  # ROOT is on sys.path (see __main__ below)

    if args.fail is not None and jax.process_index() == args.fail:
        os._exit(3)  # a crash: no orderly jax.distributed shutdown
    model, images = tiny_model(), tiny_images(16)
    mine = distributed.share(len(images), block=4)
    maps = np.zeros((16, 24, 24), np.float32)
    owned = np.zeros(16, bool)
    maps[mine] = np.asarray(jaxcam.explain(jaxcam.grad_cam, model, images[mine], batch_size=4))
    owned[mine] = True
    every = distributed.combine(maps, owned)
    objs = distributed.gather_objects({"pid": jax.process_index(), "n": int(owned.sum())})
    if distributed.is_main():
        np.save(os.path.join(args.out, "maps.npy"), every)
        with open(os.path.join(args.out, "info.txt"), "w") as f:
            f.write(f"{jax.process_count()} {len(jax.devices())} {objs}")
    distributed.barrier("done")
    return 0


def test_share_covers_everything_once_in_whole_blocks():
    from jaxcam.distributed import share

    for n in (0, 1, 5, 16, 17, 64, 65):
        for count in (1, 2, 3, 4):
            for block in (1, 4, 8):
                parts = [share(n, block, i, count) for i in range(count)]
                covered = [j for s in parts for j in range(n)[s]]
                assert covered == list(range(n))
                assert all(s.start % block == 0 for s in parts)


def test_flag_checks_and_argv_stripping():
    from jaxcam import distributed

    p = argparse.ArgumentParser()
    distributed.add_arguments(p)
    for bad, words in ((["--processes", "0"], ">= 1"), (["--coordinator", "nohost"], "HOST:PORT"),
                       (["--coordinator", "h:1", "--num-processes", "2"], "--process-id"),
                       (["--num-processes", "2", "--process-id", "2"], "0 <= id < N"),
                       (["--processes", "2", "--process-id", "0"], "do not combine")):
        with pytest.raises(ValueError, match=words):
            distributed.check_arguments(p.parse_args(bad))
    assert distributed.strip_flags(["a", "--processes", "2", "--processes=3", "b", "--process-id", "1"]) == ["a", "b"]
    assert distributed.launch(p.parse_args([])) is None  # nothing to launch: the caller is the process


@pytest.fixture(scope="module")
def env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(out, extra, env):
    os.makedirs(out, exist_ok=True)
    return subprocess.run([sys.executable, HERE, "--out", str(out)] + extra, env=env, cwd=ROOT, timeout=300,
                          capture_output=True, text=True)


def test_two_local_processes_equal_one(tmp_path, env):
    one = _run(tmp_path / "one", [], env)
    two = _run(tmp_path / "two", ["--processes", "2"], env)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    info = (tmp_path / "two" / "info.txt").read_text()
    assert info.startswith("2 2 "), info  # 2 processes, 2 global devices (one CPU device each)
    assert "'n': 8" in info
    a, b = np.load(tmp_path / "one" / "maps.npy"), np.load(tmp_path / "two" / "maps.npy")
    assert a.std() > 0.05 and (a.reshape(16, -1).max(1) > 0.99).all()  # real maps, none blank
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_a_failing_process_stops_the_others_and_gives_its_status(tmp_path, env):
    res = _run(tmp_path, ["--processes", "2", "--fail", "1"], env)
    assert res.returncode == 3, res.stderr[-2000:]
    assert not (tmp_path / "maps.npy").exists()


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(driver(sys.argv[1:]))
