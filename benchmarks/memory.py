"""Peak memory (RSS): every method at its defaults, or --max-memory plans on ResNet-50; one fresh process each.

    python benchmarks/memory.py --mode methods                    # every registry method, 1 image, 224 px,
                                                                  # ResNet-50 and EfficientNet-Lite0, default options
    python benchmarks/memory.py --mode methods --methods sess,score_cam --models efficientnet_lite0
    python benchmarks/memory.py                                   # ablation_cam, score_cam x 2G, 3G, 4G
    python benchmarks/memory.py --cases score_cam --limits 2G --timeout 300 --out /tmp/mem.json
    python benchmarks/memory.py --mode fixed --cases ablation_cam --chunks 64,2048   # no plan: given chunks

Each case builds ResNet-50 (random weights: same memory as real ones), asks
`jaxcam._src.memory_budget.plan` for the batch and chunk sizes that keep a batch-32, 224 px run of the
method on layer4 under the limit (XLA's compiled memory analysis), then explains 32 images with
them (`jaxcam.explain`) and reports the process's peak resident set size (VmHWM: Python, jax, XLA
compilation, weights, the run). A case running longer than --timeout is stopped; the peak seen so
far is reported (the chunk loop reuses its buffers, so the peak comes in the first chunks).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = ("ablation_cam", "score_cam")


def child(case: str, batch: int, size: int, limit: str | None, chunk: int | None) -> dict:
    import jax
    import numpy as np

    import jaxcam
    from jaxcam._src import memory_budget as memory

    model = jaxcam.models.resnet50()
    method = getattr(jaxcam, case)
    keyword = memory.chunk_keyword(method)
    start = time.perf_counter()
    planned = None
    if limit is not None:
        planned = memory.plan(method, model, image_size=size, batch_size=batch, max_bytes=memory.parse_bytes(limit),
                              layer="layer4", channels=2048)
        run_batch, chunk = planned.batch_size, planned.chunk_size
    else:
        run_batch = batch
    plan_s = time.perf_counter() - start
    print(json.dumps({"planned": [run_batch, chunk], "predicted_mib": planned and round(planned.predicted_bytes / 2**20),
                      "plan_seconds": round(plan_s, 1)}), flush=True)
    x = np.asarray(jax.random.normal(jax.random.key(0), (batch, size, size, 3)))
    options = {} if chunk is None else {keyword: chunk}
    out = np.asarray(jaxcam.explain(method, model, x, batch_size=run_batch, layer="layer4", **options))
    assert np.isfinite(out).all()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"batch": run_batch, "chunk": chunk, "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(peak_kib / 1024), "jax": jax.__version__}


def child_method(name: str, model_name: str, size: int) -> dict:
    """One registry method at its default options on one random image: the process's peak RSS."""
    import jax
    import numpy as np

    import jaxcam

    model = getattr(jaxcam.models, model_name)()
    x = np.asarray(jax.random.normal(jax.random.key(0), (1, size, size, 3)))
    jax.block_until_ready(model(x))
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Python, jax, the weights, one forward
    start = time.perf_counter()
    jax.block_until_ready(jaxcam.registry.get(name)(model, x))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak_kib / 1024),
            "forward_rss_mib": round(base_kib / 1024)}


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
                out, _ = proc.communicate()
                first = [json.loads(l) for l in out.splitlines() if l.startswith("{")][:1]
                return {**(first[0] if first else {}), "peak_rss_mib": peak, "seconds": round(time.perf_counter() - start, 1),
                        "timed_out": True, "peak_reached_at_s": round(peak_at)}
    if proc.returncode != 0:
        print(f"{' '.join(cmd[2:])} failed:\n{err[-2000:]}", file=sys.stderr)
        return None
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return {**rows[0], **rows[-1], "peak_rss_mib": max(rows[-1]["peak_rss_mib"], peak)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--limits", default="2G,3G,4G", help="comma-separated --max-memory limits to plan for")
    p.add_argument("--mode", choices=("plan", "fixed", "methods"), default="plan",
                   help="fixed: run --chunks without a plan; methods: every method at its defaults, batch 1")
    p.add_argument("--methods", default="", help="--mode methods: comma-separated registry names (default: all)")
    p.add_argument("--models", default="resnet50,efficientnet_lite0", help="--mode methods: models")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--chunks", default="", help="--mode fixed: comma-separated chunk sizes")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds per case; a longer run is stopped and its peak RSS so far reported (marked)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit", default=None, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child and args.model:
        print(json.dumps(child_method(args.child, args.model, args.size)))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.size, args.limit, args.chunk)))
        return 0
    if args.mode == "methods":
        return methods_table(args)

    settings = ([("limit", l) for l in args.limits.split(",") if l] if args.mode == "plan"
                else [("chunk", int(c)) for c in args.chunks.split(",") if c] or [("chunk", None)])
    results = []
    print("| method | limit asked | batch x chunk chosen | predicted peak | measured peak RSS | under? | time |")
    print("|---|---|---|---|---|---|---|")
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            sys.exit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        for kind, value in settings:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", case, "--batch", str(args.batch),
                   "--size", str(args.size)] + ([] if value is None else [f"--{kind}", str(value)])
            row = run_case(cmd, args.timeout)
            if row is None:
                continue
            row.update(case=case, **{kind: value})
            results.append(row)
            limit_mib = None
            if kind == "limit":
                sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                from jaxcam._src.memory_budget import parse_bytes

                limit_mib = parse_bytes(value) / 2**20
            planned = row.get("planned") or [row.get("batch"), row.get("chunk")]
            under = "" if limit_mib is None else ("yes" if row["peak_rss_mib"] <= limit_mib else "NO")
            note = f" (stopped at {row['seconds']:.0f} s; peak last grew at {row['peak_reached_at_s']} s)" \
                if row.get("timed_out") else f" {row['seconds']:.0f} s"
            print(f"| {case} | {value if kind == 'limit' else '-'} | {planned[0]} x {planned[1]} | "
                  f"{row.get('predicted_mib', '-')} MiB | {row['peak_rss_mib']} MiB | {under} |{note} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results else 1


def methods_table(args) -> int:
    """--mode methods: one row per method, one column pair per model; 2 GiB is the bar."""
    if args.methods:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from jaxcam.methods import registry

        names = registry.names()
    models = [m for m in args.models.split(",") if m]
    print(f"peak RSS (MiB) of one {args.size} px image at default options; forward only = the process after one forward")
    print("| method | " + " | ".join(f"{m} peak | {m} s" for m in models) + " |")
    print("|---|" + "---:|---:|" * len(models))
    results, over = [], []
    for name in names:
        cells = []
        for model in models:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--model", model, "--size", str(args.size)]
            row = run_case(cmd, args.timeout)
            if row is None:
                cells.append("failed | -")
                continue
            results.append({"method": name, "model": model, **row})
            if row["peak_rss_mib"] > 2048:
                over.append(f"{name}/{model}")
            stopped = " (stopped)" if row.get("timed_out") else ""
            cells.append(f"{row['peak_rss_mib']}{stopped} | {row['seconds']:.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"over 2 GiB: {', '.join(over) or 'none'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
