"""Render CAM overlays: one PNG per image and method (original | heatmap | overlay), and a grid.

    jaxcam render --method fast_ablation                  # offline: shipped photos, EfficientNet-Lite0
    jaxcam render --method grad_cam,ablation,score photos/ "more/*.jpg" --out /tmp/cams
    jaxcam render --method all --model resnet20 --weights none --image-size 32   # every registry method
    jaxcam render --checkpoint runs/cifar10 --data data/cifar10 --split test --random 8 --seed 1
    jaxcam render --checkpoint runs/cifar10 --data cifar10 --index 3 17 42 --class-idx 5
    jaxcam render --method ablation --target "tiger cat" --layer layer4 --model resnet50

--method takes any name of the method registry (`jaxcam.methods.registry.names()`), an alias
(``ablation``, ``spatial``) or a pytorch-grad-cam class name (``GradCAMPlusPlus``); ``all`` runs
every method defined for any model (LeGrad needs a vision transformer: ``--method legrad``). Every method option of the registry is a flag (``--window``, ``--chunk-size``, ...);
a method that has no use for one notes it. Map methods give original | heatmap | overlay;
attribution methods (guided backprop) original | attribution | its magnitude over the image;
several-maps methods one overlay per map.

Several processes (jaxcam.distributed): ``--processes N`` on this machine, or ``--coordinator
HOST:PORT --num-processes N --process-id I`` on a cluster. ``--max-memory 4G`` (or ``auto``) picks
the chunk and batch sizes. A killed run rerun with the same command ends with the files of an
uninterrupted run. The work is `jaxcam.viz.render` (callable from Python).

Files: ``<out>/<image>_<method>.png``; with several map methods also ``<out>/grid.png``. The exit
status is 1 if nothing could be rendered, 2 for a bad command line (one line on stderr, nothing
computed). Every option can also come from a YAML file (``--config``).
"""
from __future__ import annotations

import os
import sys

from jaxcam import config as C
from jaxcam import distributed
from jaxcam._src import memory_budget as memory
from jaxcam.cli import common
from jaxcam.cli.common import UsageError
from jaxcam.methods import registry
from jaxcam.viz.figures import panels, save_figure, title  # noqa: F401  (re-exported)
from jaxcam.viz.render import DEFAULT_MODEL, Job, Pick, dataset_items, file_items, render  # noqa: F401

PROG = "jaxcam render"

OPTIONS = (
    C.Option("config", str, None, "YAML file with any of these options (flags override it)", flag_only=True),
    C.Option("inputs", list, [], "image files, folders or globs (default: the photos shipped with jaxcam)",
             positional=True, nargs="*"),
    C.Option("method", str, "fast_ablation_cam", "registry method name(s), comma-separated, or 'all'"),
    C.Option("model", str, None, f"model name for jaxcam.models.load (default: {DEFAULT_MODEL})"),
    C.Option("weights", str, None, "'pretrained' (default), 'none' (random), a .pth/.th/.safetensors file, or a "
             "checkpoint dir"),
    C.Option("checkpoint", str, None, "a training run or checkpoint folder (carries model and classes)"),
    C.Option("layer", str, None, "module path to explain (default: the model's usual layer)"),
    C.Option("target", str, None, "class index or class name to explain (default: predicted class)"),
    C.Option("data", str, None, "explain images of a dataset instead of files: a folder tree "
             "<split>/<class>/<image>, a .tar.gz of one, or the name cifar10 (tfds' prepared copy)",
             aliases=("dataset",)),
    C.Option("split", str, "test", "dataset split folder (e.g. val)"),
    C.Option("random", int, None, "pick this many dataset images at random (default 8 when no --index)",
             check=C.at_least(1)),
    C.Option("seed", int, 0, "seed of --random"),
    C.Option("index", list, None, "dataset image indices (within --class-idx when given)", nargs="+",
             item=int, check=lambda v: None if v is None or min(v) >= 0 else f"must be >= 0, got {min(v)}"),
    C.Option("class_idx", str, None, "only dataset images of this class (the dataset's class index, or its name)"),
    C.Option("image_size", int, None, "square input size (default: the model's)", check=C.at_least(1),
             aliases=("size",)),
    C.Option("batch_size", int, 8, "images per compiled batch", check=C.at_least(1)),
    C.Option("bf16", bool, False, "run the model's layers in bfloat16 (model.with_compute_dtype('bfloat16')): "
             "faster where the CPU has bfloat16 kernels; maps differ from float32 by bfloat16's rounding"),
    C.Option("colormap", common.colormap, "jet", "matplotlib colormap"),
    C.Option("alpha", float, 0.5, "heatmap weight in the overlay, in [0, 1]", check=C.fraction),
    C.Option("save_maps", bool, False, "also write each map as <image>_<method>.npy (float32 (H, W) in [0, 1])"),
    C.Option("max_memory", memory.limit_argument, None, "keep each method's run under SIZE (e.g. 4G): picks "
             "--chunk-size and lowers --batch-size from XLA's memory analysis; 'auto': from the free memory"),
    C.Option("out", str, "outputs/renders", "output folder"),
    C.Option("overwrite", bool, False, "redo images already rendered in --out"),
)


def method_flags(taken) -> tuple:
    """One flag per command-line option of the registry's methods (unless the command uses the name)."""
    flags = []
    for name, opt in sorted(registry.cli_options().items()):
        if name not in taken:
            takers = [m.name for m in registry.REGISTRY.values() if name in {o.name for o in m.options}]
            flags.append(C.Option(name, opt.flag_type, None, f"{opt.doc} ({', '.join(takers[:4])}"
                                  f"{', ...' if len(takers) > 4 else ''})"))
    return tuple(flags)


def options() -> tuple:
    return OPTIONS + method_flags({o.name for o in OPTIONS})


def validate(args, flags, where):
    """Every check that needs no model: methods and their options (checked once), data, output folder."""
    data = where.get("data", "--data")
    if args.data is None and (args.random or args.index or args.class_idx is not None):
        raise UsageError(f"--random/--index/--class-idx pick images of a dataset; pass --data (formerly --dataset) too")
    if args.data is not None and args.inputs:
        raise UsageError(f"pass image files or {data}, not both")
    if args.data is not None and args.random and args.index:
        raise UsageError("pass --random N or --index I ..., not both")
    if args.data is not None and args.data.lower() != "cifar10" and not os.path.exists(args.data):
        raise UsageError(f"{data} {args.data!r}: no such folder or archive (or the name cifar10)")
    chosen = common.methods(args.method)
    notes = []
    options = common.method_options(chosen, {o.name: getattr(args, o.name) for o in flags}, notes)
    common.writable(args.out)
    try:
        distributed.check_arguments(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return chosen, options, notes


def main(argv=None) -> int:
    return common.run(_main, argv, PROG)


def _main(argv) -> int:
    every = options()
    args, where = common.parse(PROG, every, argv, __doc__, distributed.add_arguments)
    chosen, options_, notes = validate(args, every[len(OPTIONS):], where)
    status = distributed.launch(args, argv, entry="jaxcam.cli.render")  # --processes N: run N of us
    if status is not None:
        return status
    distributed.initialize(args)
    model = common.load_model(args.model, args.weights, args.checkpoint, DEFAULT_MODEL)
    if args.bf16:
        model = model.with_compute_dtype("bfloat16")
    size = args.image_size or model.info.input_size
    common.check_layer(model, args.layer, size)
    target = common.class_index(args.target, model.info.class_names)
    if args.data:
        pick = Pick(args.data, where.get("data", "--data"), args.split, args.class_idx, args.index, args.random,
                    args.seed)
        items, unmatched = dataset_items(pick, model.info.class_names), []
    else:
        items, unmatched = file_items(args.inputs, model.info.class_names)
    for note in notes:
        print(note)
    for note in C.deprecations(where, every):
        print(f"{PROG}: {note}", file=sys.stderr)
    if args.max_memory is not None:
        args.batch_size = memory.fit(chosen, options_, model, size, args.batch_size, args.layer, args.max_memory)
    job = Job(args.out, args.batch_size, args.layer, args.colormap, args.alpha, args.overwrite, args.save_maps,
              args.weights, args.checkpoint)
    return render(job, model, size, target, chosen, options_, items, unmatched)


if __name__ == "__main__":
    sys.exit(main())
