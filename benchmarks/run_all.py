"""Regenerate the speed section of BENCHMARKS.md with one command (train step, Ablation-CAM ratios).

    python benchmarks/run_all.py                 # refuses to start when the 1-minute load >= 1.5
    python benchmarks/run_all.py --force         # runs anyway; every row is marked PROVISIONAL
    python benchmarks/run_all.py --out ''        # print only

Runs benchmarks/train_step.py (one process per model) and benchmarks/ablation_vs_forward.py (one per
architecture) as subprocesses with --json, each after the 1-minute load has settled below 1.5, and writes their tables between the markers
``<!-- run_all:begin -->`` / ``<!-- run_all:end -->`` of BENCHMARKS.md (appended when absent), with
the date, the machine, the versions and the load before and after each script.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
QUIET = 1.5
TRAIN_MODELS = ("resnet20", "resnet18", "efficientnet_lite0")


def settle(limit: float = 240.0) -> float:
    """Wait (up to `limit` s) for the 1-minute load to fall below QUIET; returns the load then.

    A benchmark's own two busy threads lift the 1-minute average towards 2, so a reading taken right
    after a row says little about other processes: each row starts, and the run ends, on a settled
    reading (a row whose settled reading before or after is >= QUIET shares the machine)."""
    start = time.time()
    while os.getloadavg()[0] >= QUIET and time.time() - start < limit:
        time.sleep(10)
    return os.getloadavg()[0]


def run_json(script: str, *args: str) -> list:
    """One row per call: settle, run the script with --json, settle again; the rows get the settled
    loads as load_before / load_after."""
    before = settle()
    out = subprocess.run([sys.executable, os.path.join(HERE, script), "--json", *args], check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)))
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    after = settle()
    for row in rows:
        row["load_before"], row["load_after"] = round(before, 2), round(after, 2)
    return rows


def mark(row) -> str:
    """Settled load before / after the row's process (and, in brackets, the readings at the row's own
    start and end, which include the benchmark's threads)."""
    load = max(row["load_before"], row["load_after"])
    return (f"{row['load_before']:.2f} / {row['load_after']:.2f} ({row['load_start']:.2f}-{row['load_end']:.2f})"
            + ("" if load < QUIET else " PROVISIONAL"))


def render(train_rows, ablation_rows, header: str) -> str:
    lines = [BEGIN, header, "",
             "### Train step (forward + backward + SGD update, uint8 batch in), img/s, one process",
             "`python benchmarks/train_step.py`", "",
             "| model | px | batch | jaxcam | torch NCHW | torch channels_last | vs NCHW | vs channels_last | load before / after (during) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in train_rows:
        lines.append(f"| {r['model']} | {r['image_size']} | {r['batch_size']} | {r['jaxcam_img_s']:.1f} | "
                     f"{r['torch_nchw_img_s']:.1f} | {r['torch_channels_last_img_s']:.1f} | {r['ratio_vs_nchw']:.2f} | "
                     f"{r['ratio_vs_channels_last']:.2f} | {mark(r)} |")
    lines += ["", "### Ablation-CAM (all channels) vs one jitted forward, 224 px",
              "`python benchmarks/ablation_vs_forward.py`", "",
              "| model | batch | forward ms | Ablation-CAM layer4 ms | x forward (<= 1.5) | layer3 Ablation-CAM ms | "
              "layer3 head on plain copies ms | masked / plain (<= 1.2) | load before / after (during) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in ablation_rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['forward_ms']:.1f} | {r['ablation_layer4_ms']:.1f} | "
                     f"{r['layer4_x_forward']:.2f} | {r['ablation_layer3_ms']:.0f} | {r['layer3_plain_copies_ms']:.0f} | "
                     f"{r['layer3_masked_over_plain']:.2f} | {mark(r)} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
    p.add_argument("--force", action="store_true", help="run at load >= 1.5; rows are marked PROVISIONAL")
    args = p.parse_args()
    load = os.getloadavg()[0]
    if load >= QUIET and not args.force:
        print(f"load average {load:.2f} >= {QUIET}: the machine is not quiet; figures would not count. "
              "Wait, or pass --force to mark them PROVISIONAL.", file=sys.stderr)
        return 2
    import jax
    import torch
    train_rows = [r for model in TRAIN_MODELS for r in run_json("train_step.py", "--model", model)]
    ablation_rows = [r for arch in ("resnet18", "resnet50") for r in run_json("ablation_vs_forward.py", "--archs", arch)]
    header = (f"Regenerated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
              f"`python benchmarks/run_all.py`; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"jax {jax.__version__}, torch {torch.__version__}; load {load:.2f} at start. Rows at load >= {QUIET} "
              "are PROVISIONAL (other processes on the machine). Each script calls `jaxcam.train.reuse_host_memory()` "
              "first, as jaxcam's commands do (glibc keeps freed blocks; in train_step.py torch runs under it too).")
    text = render(train_rows, ablation_rows, header)
    print(text)
    if args.out:
        old = open(args.out).read() if os.path.exists(args.out) else ""
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END) + 1:]
        else:
            new = old + ("\n## Training and Ablation-CAM speed\n\n" if old else "") + text
        with open(args.out, "w") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
