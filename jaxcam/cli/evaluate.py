"""Faithfulness of CAM methods: methods x images x model -> a table of metrics (method by metric).

    jaxcam evaluate --model efficientnet_lite0 --data imagenet-samples/ --limit 200 --method all --out results/eval

For every method of the registry that returns maps (plus a random-map baseline row) and every image
it computes Average Drop %, % Increase in Confidence, deletion and insertion AUC and ROAD (MoRF /
LeRF / combined). A method that fails is reported loudly: a row with its error, a message on stderr
and exit status 1 (the other methods still run). It prints the table and writes into --out:
table.csv, table.md, curves.png and cache/<config>/<method>/<image>.npz (a restarted run skips the
images already done with the same configuration). The work is `jaxcam.metrics.evaluation`.

Several processes (jaxcam.distributed): ``--processes N`` on this machine, or ``--coordinator
HOST:PORT --num-processes N --process-id I`` on a cluster; each evaluates its share of whole
batches, process 0 gathers the results and writes the tables once. Every option can also come from
a YAML file (``--config``).
"""
from __future__ import annotations

import sys

from jaxcam import config as C
from jaxcam import distributed
from jaxcam.cli import common
from jaxcam.cli.common import UsageError
from jaxcam.metrics import evaluation
from jaxcam.metrics.evaluation import resolve_methods  # noqa: F401  (re-exported)

PROG = "jaxcam evaluate"


def _percentile(value) -> float:
    value = float(value)
    if not 0 < value < 100:
        raise ValueError(f"must be in (0, 100), got {value}")
    return value


OPTIONS = (
    C.Option("config", str, None, "YAML file with any of these options (flags override it)", flag_only=True),
    C.Option("model", str, "efficientnet_lite0", "a jaxcam.models.load name"),
    C.Option("weights", str, "pretrained", "'pretrained', a checkpoint path, or 'random'"),
    C.Option("checkpoint", str, None, "a training run or checkpoint folder (instead of --model)"),
    C.Option("data", str, None, "a folder of images (optionally labels.tsv: file, class_index); required"),
    C.Option("limit", int, None, "evaluate a fixed, evenly spaced subset of this many images", check=C.at_least(1)),
    C.Option("image_size", int, 224, "input size: resize the short side, center crop", check=C.at_least(1),
             aliases=("size",)),
    C.Option("method", str, "all", "comma-separated registry method names or aliases, or 'all' (every map method)",
             aliases=("methods",)),
    C.Option("layer", str, None, "layer to explain (default: the model's)"),
    C.Option("targets", str, "pred", "explain the predicted class or the labels.tsv class", choices=("pred", "label")),
    C.Option("batch_size", int, 8, "images per compiled batch", check=C.at_least(1)),
    C.Option("chunk_size", int, None, "ablated/masked copies per vmapped chunk (ablation and score families)",
             check=C.at_least(1)),
    C.Option("score", str, "softmax", "score space of the metrics", choices=("softmax", "logit", "sigmoid")),
    C.Option("steps", int, 20, "deletion/insertion steps (0: no curves)", check=C.at_least(0)),
    C.Option("baseline", str, "blur", "what deleted pixels become", choices=("blur", "zeros", "mean")),
    C.Option("percentiles", list, [20, 50, 80], "ROAD percentiles in (0, 100) (none: skip ROAD)", nargs="*",
             item=_percentile),
    C.Option("road_tol", float, 1e-5, "conjugate-gradient tolerance of the imputer", check=C.positive),
    C.Option("seed", int, 0, "seeds the random maps and the ROAD noise"),
    C.Option("bf16", bool, False, "explain with the model's layers in bfloat16 (model.with_compute_dtype('bfloat16')); "
             "the metrics still score the float32 model, on its predicted class"),
    C.Option("out", str, "results/evaluate", "output folder"),
    C.Option("report_only", bool, False, "compute nothing: tabulate what the cache holds (e.g. during a run)"),
)


def run(argv, progress: bool = True) -> tuple:
    """Validate, compute what the cache lacks, write the tables: (rows, failed methods)."""
    args, where = common.parse(PROG, OPTIONS, argv, __doc__, distributed.add_arguments)
    if not args.data:
        raise UsageError("--data: required; pass a folder of images")
    try:
        distributed.check_arguments(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    notes = []
    methods = resolve_methods(args.method, notes, option=where.get("method", "--method"))
    checked = common.method_options(methods, {"chunk_size": args.chunk_size})  # once per run
    calls = {m.name: m.bound(checked[m.name]) for m in methods}
    files = evaluation.list_images(args.data, args.limit)
    labels = evaluation.read_labels(args.data)
    if args.targets == "label" and not labels:
        raise UsageError(f"--targets label: {args.data} has no labels.tsv (rows: file<TAB>class index)")
    common.writable(args.out)
    status = distributed.launch(args, argv, entry="jaxcam.cli.evaluate")  # --processes N: run N of us
    if status is not None:
        return None, status
    distributed.initialize(args)
    model = common.load_model(args.model, args.weights, args.checkpoint)
    common.check_layer(model, args.layer, args.image_size)
    for note in notes + [f"{PROG}: {n}" for n in C.deprecations(where, OPTIONS)]:
        print(note, file=sys.stderr)
    settings = evaluation.Settings(**{f: getattr(args, f) for f in evaluation.Settings.__dataclass_fields__})
    return evaluation.run(settings, model, files, labels, calls, args.out, progress, args.report_only,
                          model_key=args.checkpoint or model.info.name)


def main(argv=None) -> int:
    """0 when every method ran, 1 when one failed (its row holds the error), 2 for a bad command line."""
    def go(a):
        rows, failed = run(a)
        return failed if rows is None else 1 if failed else 0  # rows None: the --processes parent's status

    return common.run(go, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
