"""Run one jaxcam job as several cooperating JAX processes (hosts, or local processes on one machine).

    p = argparse.ArgumentParser(); jaxcam.distributed.add_arguments(p); args = p.parse_args(argv)
    status = jaxcam.distributed.launch(args, argv, entry="jaxcam.cli.render")   # --processes N
    if status is not None:
        return status                           # the parent of N local processes: they are done
    jaxcam.distributed.initialize(args)         # jax.distributed.initialize, CPU collectives (gloo)
    mine = items[jaxcam.distributed.share(len(items), block=batch_size)]
    ...                                         # explain `mine`, write their per-item files
    rows = jaxcam.distributed.combine(rows, owned)   # every process's rows, on every process
    if jaxcam.distributed.is_main(): write_summary(rows)

Flags (`add_arguments`):
  --coordinator HOST:PORT --num-processes N --process-id I   the flags a cluster launcher passes
      (one process per host; process 0 runs the coordinator service at HOST:PORT). With
      --num-processes but no --coordinator, ``jax.distributed.initialize()`` detects the cluster
      (SLURM, Open MPI, Cloud TPU, GKE).
  --processes N   start N local processes on this machine: the parent re-executes the same command
      with the three flags above and a free port, waits for them, and returns the first failure's
      exit status (0 if all succeeded). Each child sees its own local devices.

Items are shared in contiguous blocks (`share`), so a batch is never split across processes and
each process computes exactly what one process would compute for those items. Results are
gathered with ``jax.experimental.multihost_utils.process_allgather``; nothing here is a private
protocol: JAX's coordination service starts the processes' collectives (gloo on CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

import numpy as np

_FLAGS = ("--coordinator", "--num-processes", "--process-id", "--processes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the multi-process flags to `parser` (a group "multi-process")."""
    g = parser.add_argument_group("multi-process (jax.distributed)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0's coordinator service (as a cluster launcher passes it)")
    g.add_argument("--num-processes", type=int, default=None, metavar="N", help="total number of processes")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's index, 0..N-1")
    g.add_argument("--processes", type=int, default=None, metavar="N",
                   help="start N cooperating processes on this machine (same command, a free local port)")


def check_arguments(args) -> None:
    """Raise one clear ValueError line for inconsistent multi-process flags."""
    n, i, coord, local = (getattr(args, k, None) for k in ("num_processes", "process_id", "coordinator", "processes"))
    if local is not None:
        if local < 1:
            raise ValueError(f"--processes must be >= 1, got {local}")
        if coord is not None or n is not None or i is not None:
            raise ValueError("--processes starts local processes itself: do not combine it with "
                             "--coordinator/--num-processes/--process-id")
        return
    if n is not None and n < 1:
        raise ValueError(f"--num-processes must be >= 1, got {n}")
    if i is not None and (n is None or not 0 <= i < n):
        raise ValueError(f"--process-id {i} needs --num-processes N with 0 <= id < N")
    if coord is not None:
        if not re.fullmatch(r"[^\s:]+:\d{1,5}", coord) or not 0 < int(coord.rsplit(":", 1)[1]) < 65536:
            raise ValueError(f"--coordinator {coord!r} must be HOST:PORT, e.g. 10.0.0.1:12355")
        if n is None or i is None:
            raise ValueError("--coordinator needs --num-processes and --process-id")


def free_port() -> int:
    """A TCP port free on this machine right now (for a local coordinator)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_flags(argv: Sequence[str], flags: Sequence[str] = _FLAGS) -> list:
    """`argv` without `flags` and their values (``--f V`` and ``--f=V`` forms)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in flags):
            continue
        out.append(a)
    return out


def _die_with_parent():  # runs in the child before exec: SIGKILL it if the parent dies (Linux)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_DEATHSIG


def loopback_unproxied(env: Optional[dict] = None) -> dict:
    """`env` (default: this process's) with 127.0.0.1 and localhost added to ``no_proxy``/``NO_PROXY``.

    jax.distributed talks gRPC to the coordinator, and gRPC honours http(s)_proxy: with a proxy set
    (or all proxies pointed at a closed port to forbid downloads) local processes could not reach
    their own coordinator on the loopback.
    """
    env = dict(os.environ if env is None else env)
    for key in ("no_proxy", "NO_PROXY"):
        hosts = [h for h in env.get(key, "").split(",") if h]
        env[key] = ",".join(hosts + [h for h in ("127.0.0.1", "localhost") if h not in hosts])
    return env


_GRACE_SECONDS = 5.0  # after one process failed, how long the others get to stop on SIGTERM


def launch(args, argv: Optional[Sequence[str]] = None, entry: Optional[str] = None,
           env: Optional[dict] = None) -> Optional[int]:
    """With ``--processes N``: run N copies of this command as processes 0..N-1 and return the exit status.

    Returns None when there is nothing to launch (no --processes): the caller goes on as one of the
    processes. `argv` is the command's arguments (default ``sys.argv[1:]``); `entry` is a module name
    (run with ``python -m``) or a script path (default ``sys.argv[0]``). The first child to fail
    stops the others; its exit status is returned (a child killed by signal S gives 128 + S).
    """
    n = getattr(args, "processes", None)
    if n is None:
        return None
    check_arguments(args)
    argv = list(sys.argv[1:] if argv is None else argv)
    entry = entry or sys.argv[0]
    head = [sys.executable] + ([entry] if entry.endswith(".py") else ["-m", entry])
    base = head + strip_flags(argv)
    coord = f"127.0.0.1:{free_port()}"
    env = loopback_unproxied(env)
    procs = []
    for i in range(n):
        cmd = base + ["--coordinator", coord, "--num-processes", str(n), "--process-id", str(i)]
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if os.name == "posix" else None))
    status, stopping_since = 0, None
    try:
        running = list(procs)
        while running:
            for p in list(running):
                rc = p.poll()
                if rc is None:
                    continue
                running.remove(p)
                if rc != 0 and status == 0:
                    status = 128 - rc if rc < 0 else rc
                    stopping_since = time.monotonic()
                    for q in running:  # the others would wait for it forever in a collective
                        q.terminate()
            if stopping_since is not None and time.monotonic() - stopping_since > _GRACE_SECONDS:
                for q in running:  # a process blocked in jax.distributed may not answer SIGTERM
                    q.kill()
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return status


def initialize(args) -> None:
    """``jax.distributed.initialize`` from the flags (nothing for a single process). Call before any JAX work."""
    check_arguments(args)
    n = getattr(args, "num_processes", None)
    if n is None or n == 1 and getattr(args, "coordinator", None) is None:
        return
    import jax

    if getattr(args, "coordinator", None) is None:  # a cluster launcher's environment (SLURM, MPI, ...)
        jax.distributed.initialize(num_processes=n, process_id=getattr(args, "process_id", None))
    else:
        jax.distributed.initialize(args.coordinator, num_processes=n, process_id=args.process_id)


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_main() -> bool:
    """True on process 0, the one that writes the shared outputs (summaries, tables, grids)."""
    return process_index() == 0


def share(num_items: int, block: int = 1, index: Optional[int] = None, count: Optional[int] = None) -> slice:
    """This process's contiguous share of `num_items`: whole blocks of `block` items, spread evenly.

    With ``block=batch_size`` no batch is split between processes, so each image is computed in the
    same batch (same companions, same padding) as in a single-process run.
    """
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    blocks = -(-num_items // block)
    lo, hi = blocks * index // count, blocks * (index + 1) // count
    return slice(min(lo * block, num_items), min(hi * block, num_items))


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op for one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def combine(rows, owned):
    """Every process's rows on every process: ``rows`` is a pytree of arrays (num_items, ...) whose rows
    this process owns where ``owned`` (bool (num_items,)) is True; other rows are ignored.

    Gathered with ``process_allgather``; each row is taken from the process that owns it (exactly one
    must). Exact for any dtype (no arithmetic). For one process it returns `rows` unchanged.
    """
    import jax

    owned = np.asarray(owned, bool)
    if process_count() == 1:
        return rows
    from jax.experimental import multihost_utils

    owners = np.asarray(multihost_utils.process_allgather(owned.astype(np.int32)))  # (P, N)
    if not (owners.sum(0) == 1).all():
        raise RuntimeError("combine: every row must be owned by exactly one process")
    who = owners.argmax(0)

    def pick(leaf):
        leaf = np.asarray(leaf)
        every = np.asarray(multihost_utils.process_allgather(leaf))  # (P, N, ...)
        return every[who, np.arange(len(who))]

    return jax.tree_util.tree_map(pick, rows)


def gather_objects(obj):
    """A list with each process's picklable `obj` (in process order), on every process."""
    if process_count() == 1:
        return [obj]
    import pickle

    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(obj), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(data)], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: len(data)] = data
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(every[p, : sizes[p]].tobytes()) for p in range(len(sizes))]
