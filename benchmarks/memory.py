"""Peak memory (RSS) of the heavy methods on ResNet-50: one fresh subprocess per case.

    python benchmarks/memory.py                       # forward, ablation_cam, score_cam; batch 8, 224 px
    python benchmarks/memory.py --cases ablation_cam --chunks 32,128 --out /tmp/mem.json

Each case builds ResNet-50 (random weights: same memory as real ones), compiles and runs the
method once on a batch, and reports the process's peak resident set size (``ru_maxrss``: includes
Python, jax, XLA compilation and the model's 98 MB of weights). `forward` (one plain forward) is
the baseline the methods are compared to. `--chunks` sets the methods' ``chunk_size``: ablations
(or Score-CAM channels) per vmapped chunk; the default is each method's own default.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = ("forward", "ablation_cam", "score_cam")


def child(case: str, batch: int, size: int, chunk: int | None) -> dict:
    import jaxcam  # sets the XLA CPU flags first

    import jax
    import numpy as np

    model = jaxcam.models.resnet50()
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    options = {} if chunk is None else {"chunk_size": chunk}
    start = time.perf_counter()
    if case == "forward":
        out = jax.jit(lambda m, v: m(v))(model, x)
    else:
        out = getattr(jaxcam, case)(model, x, layer="layer4", **options)
    out = np.asarray(out)
    seconds = time.perf_counter() - start
    assert np.isfinite(out).all()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"case": case, "batch": batch, "size": size, "chunk": chunk, "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_kib / 1024), "jax": jax.__version__}


def _vm_hwm_mib(pid: int) -> int:
    """The process's peak RSS so far (VmHWM in /proc), MiB; 0 if unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return 0


def run_case(cmd, timeout: float):
    """Run one child; its own report, or (after `timeout` s) the peak RSS seen until it was stopped.

    A method's chunks run in a loop (lax.map) that reuses the same buffers, so the peak is reached
    in the first chunk; a run stopped after several chunks has already shown it.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, peak_at = 0, 0.0
    while True:
        try:
            out, err = proc.communicate(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            now = _vm_hwm_mib(proc.pid)
            if now > peak:
                peak, peak_at = now, time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                proc.kill()
                proc.communicate()
                return {"peak_rss_mib": peak, "seconds": round(time.perf_counter() - start, 1), "timed_out": True,
                        "peak_reached_at_s": round(peak_at)}
    if proc.returncode != 0:
        print(f"{' '.join(cmd[2:])} failed:\n{err[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chunks", default="", help="comma-separated chunk sizes to try per method (default: its own)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds per case; a longer run is stopped and its peak RSS so far reported (marked)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.size, args.chunk)))
        return 0

    chunks = [int(c) for c in args.chunks.split(",") if c] or [None]
    results = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            sys.exit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        for chunk in chunks if case != "forward" else [None]:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", case, "--batch", str(args.batch),
                   "--size", str(args.size)] + ([] if chunk is None else ["--chunk", str(chunk)])
            row = run_case(cmd, args.timeout)
            if row is None:
                continue
            row.update(case=case, batch=args.batch, size=args.size, chunk=chunk)
            results.append(row)
            note = (f"  (stopped after {args.timeout:.0f} s; peak so far, last grew at {row['peak_reached_at_s']} s)"
                    if row.get("timed_out") else "")
            print(f"{row['case']:>14}  batch {row['batch']}  {row['size']}px  chunk {str(row['chunk'] or 'default'):>7}  "
                  f"peak RSS {row['peak_rss_mib']:>6} MiB  {row['seconds']:>7.1f} s{note}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
