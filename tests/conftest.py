"""Shared test setup: a persistent XLA compilation cache, session fixtures, and a skip budget.

Skips are never silent in CI: .ci/run passes ``-rs`` (each skip and its reason is listed) and sets
JAXCAM_EXPECTED_SKIPS (the number of skips the full suite may have, listed in .ci/run); a run with any other
number of skips fails, so a test that starts skipping (a missing package, a new skip marker) is seen.
"""
import os
import shutil
import tempfile

# One OpenMP thread per test worker (before torch or jaxcam's oneDNN load libgomp, which reads it once). The
# suite runs as many workers as cores (`pytest -n 2` on 2 cores): a worker's OpenMP threads (torch's and
# oneDNN's) only contend with the other worker, and libgomp's idle threads spin. Measured 2026-12-05 on 2
# cores, one tree: 426 s with OMP_NUM_THREADS=2 (the default there), 414-416 s with 1 (three runs). A value
# the caller sets wins; XLA's own threads are left as they are (turning Eigen's off gained nothing and moved
# one ill-conditioned map by 1.5e-5). Subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax
import pytest

# The persistent XLA compilation cache is per run: a fresh folder, shared with the commands the tests
# start as subprocesses (through JAX_COMPILATION_CACHE_DIR), removed when the session ends, so a run's
# time never depends on what an earlier run left behind. JAXCAM_TEST_XLA_CACHE=<folder> keeps a
# persistent one instead (faster local re-runs; not for timing the suite).
# Under pytest-xdist (`-n 2`) the workers inherit the environment of the controlling
# process, which made the folder: they share it (JAXCAM_TEST_RUN_CACHE) and leave its removal to it.
_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
_OWN_CACHE = not os.environ.get("JAXCAM_TEST_XLA_CACHE") and not (_WORKER and os.environ.get("JAXCAM_TEST_RUN_CACHE"))
XLA_CACHE = (os.environ.get("JAXCAM_TEST_XLA_CACHE") or (os.environ.get("JAXCAM_TEST_RUN_CACHE") if _WORKER else None)
             or tempfile.mkdtemp(prefix="jaxcam-test-xla-"))
if _OWN_CACHE:
    os.environ["JAXCAM_TEST_RUN_CACHE"] = XLA_CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = XLA_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
# The tests compile hundreds of small programs and run each once or twice: XLA:CPU's LLVM optimization
# and its fusion emitters cost more compile time than they save at run time there (measured on
# tests/methods/test_parity_pgc_families.py: 53 -> 29 CPU s). The values checked do not depend on it (the
# same references, the same tolerances). Subprocesses inherit it. JAXCAM_TEST_XLA_DEFAULTS=1 keeps XLA's
# defaults (what users run; the benchmarks and .ci/run's main job always do); a flag already in XLA_FLAGS wins.
# (Withdrawn for a day as a suspect of the segfaults; their cause was the memory-map limit, see
# pytest_runtest_teardown below.)
# One LLVM module per program (no parallel codegen split): the tests' programs are small, and splitting them
# cost more than it saved (tests/methods/test_option_values_pgc.py alone: 71.3 -> 59.4 s; load ~1.1-1.5).
TEST_XLA_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false",
                  "xla_cpu_parallel_codegen_split_count": "1"}
if os.environ.get("JAXCAM_TEST_XLA_DEFAULTS", "0") in ("", "0"):
    from jaxcam._src.compile import user_flags

    _set = user_flags()
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", "")] + [f"--{k}={v}" for k, v in TEST_XLA_FLAGS.items() if k not in _set]).strip()
# The test processes themselves (pytest and its xdist workers, which inherit the variables above) keep no
# persistent cache: with it the suite took 507 s against 499 s without (2026-12-05); it had first been turned
# off as a suspect of the segfaults, whose cause was the memory-map limit. The commands the tests start keep
# it (short-lived processes that rerun the same programs).
jax.config.update("jax_enable_compilation_cache", False)

_SKIPPED = []

# JAXCAM_TEST_TIMES=<file.tsv>: one row per test appended (wall s, CPU s of this process + the subprocesses
# it waited for, node id): CPU seconds rank the tests' cost even on a shared machine. Under xdist each worker
# appends its own rows (a row's CPU is its worker's).
_TIMES = os.environ.get("JAXCAM_TEST_TIMES")


def _cpu():
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _TIMES:
        yield
        return
    import time

    wall, cpu = time.perf_counter(), _cpu()
    yield
    with open(_TIMES, "a") as f:  # as it goes: a long run can be read before it ends
        f.write(f"{time.perf_counter() - wall:.2f}\t{_cpu() - cpu:.2f}\t{item.nodeid}\n")


def pytest_runtest_teardown(item, nextitem):
    """Keep each test process far below the kernel's memory-map limit (vm.max_map_count).

    Every compiled XLA:CPU program holds ~3 maps and JAX's caches keep thousands: a worker running a third
    of the suite reached 45,000 of the default 65,530 maps, and a compile past the limit dies in a segfault
    (jaxcam/_src/compile.py's module doc). The library's own guard clears JAX's caches at 75% with a
    warning; the suite clears them quietly: at 30% when the next test is in another file (a file's programs
    are mostly reused within it), at 60% within a file, so no test sees the library's warning by accident.
    """
    from jaxcam._src import compile as compile_lib

    same_file = nextitem is not None and nextitem.path == item.path
    compile_lib.guard_memory_maps(0.6 if same_file else 0.3, every=0.0, warn=False)


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_collectreport(report):
    """A module skipped while collected (a module-level ``pytest.importorskip``) counts as a skip too:
    it hides every test in the file."""
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):  # an xdist worker: its reports reach the controlling process
        return
    if _OWN_CACHE:
        shutil.rmtree(XLA_CACHE, ignore_errors=True)
    expected = os.environ.get("JAXCAM_EXPECTED_SKIPS")
    if expected is None or exitstatus not in (0, 1):
        return
    if len(_SKIPPED) != int(expected):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"JAXCAM_EXPECTED_SKIPS={expected} but {len(_SKIPPED)} tests skipped: {_SKIPPED}", red=True
            )
        session.exitstatus = 1


@pytest.fixture(scope="session")
def tv_resnet18():
    """torchvision ResNet-18, 10 classes, seeded, randomized BatchNorm statistics, eval mode."""
    import torch
    import torchvision

    from tests.torch_utils import randomize_batchnorm

    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.resnet18(num_classes=10))


@pytest.fixture(scope="session")
def resnet18(tv_resnet18):
    """The same weights converted into jaxcam."""
    import jaxcam

    return jaxcam.models.resnet18(num_classes=10, weights=tv_resnet18.state_dict())


@pytest.fixture(scope="session")
def tv_resnet20():
    """A torch CIFAR ResNet-20 (option-A shortcuts), seeded, randomized BatchNorm statistics, eval."""
    import torch

    from tests.torch_utils import TorchCifarResNet, randomize_batchnorm

    torch.manual_seed(0)
    return randomize_batchnorm(TorchCifarResNet(n=3), seed=2)


@pytest.fixture(scope="session")
def resnet20(tv_resnet20):
    import jaxcam

    return jaxcam.models.load("resnet20", weights=tv_resnet20.state_dict())


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width x height black pixels, written chunk by chunk (never held
    decoded): 40000 x 40000 is 1.6 G pixels in ~190 kB, a decompression bomb."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(6)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    block = row * 1000
    parts = [comp.compress(block) for _ in range(height // 1000)] + [comp.compress(row * (height % 1000)), comp.flush()]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def bomb_png():
    """Bytes of a 40000 x 40000 1-bit PNG (PIL raises DecompressionBombError on opening it)."""
    return png_bomb(40000, 40000)
