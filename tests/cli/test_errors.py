"""Every bad option of every entry point: exit status 2, one stderr line naming the option, within seconds,
nothing written to the output folder. Add rows to ROWS: (entry point, argv, text the line must contain)."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = "{out}"  # replaced by a fresh folder per row

def _script(path):
    """main() of a script file, imported (not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need their module registered
    spec.loader.exec_module(module)
    return module


def _in_process(name):
    def main(argv):
        if name == "render":
            from jaxcam.cli.render import main as fn
        elif name == "evaluate":
            from jaxcam.cli.evaluate import main as fn
        elif name == "accuracy.py":
            fn = _script(ROOT / "scripts" / "accuracy.py").main
        else:
            fn = lambda a: _script(ROOT / "benchmarks" / "vs_pytorch_grad_cam.py").parse_args(a) and 0  # noqa: E731
        try:
            return fn(argv)
        except SystemExit as exit_:  # argparse
            return exit_.code
    return main


# In-process entry points (fast); the shims and the console command run as real processes.
ENTRY_POINTS = {name: _in_process(name) for name in ("render", "evaluate", "accuracy.py", "benchmark")}
ENTRY_POINTS["render.py"] = [sys.executable, str(ROOT / "scripts" / "render.py")]
ENTRY_POINTS["jaxcam"] = [sys.executable, "-m", "jaxcam.cli"]

ROWS = [
    ("render", ["--method", "nosuch"], "--method"),
    ("render", ["--method", "grad_cam,gradcamm"], "--method"),
    ("render", ["--colormap", "nosuchmap"], "--colormap"),
    ("render", ["--alpha", "1.5"], "--alpha"),
    ("render", ["--batch-size", "0"], "--batch-size"),
    ("render", ["--chunk-size", "0"], "--chunk-size"),
    ("render", ["--chunk-size", "-3"], "--chunk-size"),
    ("render", ["--window", "0"], "--window"),
    ("render", ["--stride", "x"], "--stride"),
    ("render", ["--image-size", "0"], "--image-size"),
    ("render", ["--score", "probability"], "--score"),
    ("render", ["--model", "nosuchmodel"], "nosuchmodel"),
    ("render", ["--weights", "/no/such/file.pth"], "--weights"),
    ("render", ["--checkpoint", "/no/such/run"], "--checkpoint"),
    ("render", ["--dataset", "/no/such/tree"], "--dataset"),
    ("render", ["--random", "0", "--dataset", "cifar10"], "--random"),
    ("render", ["--index", "-1", "--dataset", "cifar10"], "--index"),
    ("render", ["--random", "3"], "--dataset"),
    ("render", ["--model", "resnet20", "--weights", "none", "--layer", "layer9"], "--layer"),
    ("render", ["--model", "resnet20", "--weights", "none", "--target", "caat"], "--target"),
    ("render.py", ["--method", "nosuch"], "--method"),
    ("evaluate", ["--data", "/no/such/folder"], "--data"),
    ("evaluate", ["--data", ".", "--methods", "nosuch"], "--methods"),
    ("evaluate", ["--data", ".", "--methods", "guided_backprop"], "--methods"),
    ("evaluate", ["--data", ".", "--batch-size", "0"], "--batch-size"),
    ("evaluate", ["--data", ".", "--steps", "-1"], "--steps"),
    ("evaluate", ["--data", ".", "--percentiles", "120"], "--percentiles"),
    ("evaluate", ["--data", ".", "--road-tol", "0"], "--road-tol"),
    ("evaluate", ["--data", ".", "--limit", "0"], "--limit"),
    ("evaluate", ["--data", ".", "--chunk-size", "0"], "--chunk-size"),
    ("accuracy.py", ["--batch", "0"], "--batch"),
    ("accuracy.py", ["--only", "cifar", "--cifar", "/no/such.tar.gz"], "--cifar"),
    ("benchmark", ["--batches", "1,0"], "--batches"),
    ("benchmark", ["--repeats", "0"], "--repeats"),
    ("benchmark", ["--methods", "nosuch"], "--methods"),
    ("benchmark", ["--threads", "999"], "--threads"),
    ("jaxcam", ["nosuchcommand"], "nosuchcommand"),
]


@pytest.mark.parametrize("entry, argv, names", ROWS, ids=[f"{e}:{' '.join(a)}" for e, a, _ in ROWS])
def test_bad_option_is_one_line_exit_2(entry, argv, names, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace(OUT, str(out)) for a in argv]
    if entry in ("render", "render.py", "evaluate"):
        argv += ["--out", str(out)]
    start = time.perf_counter()
    runner = ENTRY_POINTS[entry]
    if callable(runner):
        code = runner(argv)
        stderr = capsys.readouterr().err
    else:
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run(runner + argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        code, stderr = proc.returncode, proc.stderr
    seconds = time.perf_counter() - start
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr[-2000:]
    assert len(lines) == 1 and names in lines[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))
    assert seconds < 60  # generous: the machine is shared; unloaded it is a few seconds
