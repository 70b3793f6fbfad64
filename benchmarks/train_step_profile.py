"""Per-op-family split of one jaxcam train step (jax.profiler trace, XLA:CPU thunk times summed over threads).

    python benchmarks/train_step_profile.py --model resnet20 --size 32 --batch 128 [--native 0]
"""
import argparse, contextlib, glob, gzip, json, os, re, sys, tempfile, collections
import numpy as np, jax, optax
import jaxcam
from jaxcam import nn as jnn, train
p = argparse.ArgumentParser(); p.add_argument("--model", default="resnet20"); p.add_argument("--size", type=int, default=32)
p.add_argument("--batch", type=int, default=128); p.add_argument("--native", type=int, default=1); p.add_argument("--steps", type=int, default=3)
a = p.parse_args()
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (a.batch, a.size, a.size, 3), dtype=np.uint8); labels = rng.integers(0, 10, a.batch).astype(np.int32)
model = getattr(jaxcam.models, a.model)(num_classes=10)
tx = train.make_optimizer("sgd", optax.constant_schedule(0.05))
with jnn.native(bool(a.native)):
    step = train.make_train_step(model, tx, a.size)
    state = train.replicate(train.init_state(model, tx)); batch = train.shard_batch(images, labels)
    compiled = step.lower(state, *batch).compile()
hlo = compiled.as_text()
for _ in range(2):
    state, m = compiled(state, *batch); jax.block_until_ready(m)
d = tempfile.mkdtemp()
with jax.profiler.trace(d, create_perfetto_trace=True):
    for _ in range(a.steps):
        state, m = compiled(state, *batch); jax.block_until_ready(m)
f = glob.glob(d + "/**/perfetto_trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(f))["traceEvents"]
# custom-call targets by instruction name
cc = dict(re.findall(r'%?([\w.-]+) = [^\n]*custom-call\([^\n]*custom_call_target="(\w+)"', hlo))
fam = collections.Counter(); tot = 0.0
def family(n):
    base = re.sub(r"\.\d+$", "", n)
    if n in cc or base in cc:
        t = cc.get(n, cc.get(base)); return {"jaxcam_conv_fwd": "conv fwd (oneDNN)", "jaxcam_conv_bwd_data": "conv bwd-data (oneDNN)", "jaxcam_conv_bwd_weights": "conv bwd-weights (oneDNN)"}.get(t, t)
    if "convolution" in n: return "conv (XLA) " + n.split(".")[0]
    if "transpose" in n or "copy" in n: return "transpose/copy fusions"
    if "reduce" in n: return "reductions (BN stats etc.)"
    if "fusion" in n or n.startswith(("add", "multiply", "maximum", "select", "subtract", "divide")): return "elementwise fusions"
    return "other: " + base
names = collections.Counter()
for e in ev:
    if e.get("ph") != "X" or "dur" not in e: continue
    n = e.get("name", "")
    if n.startswith(("Thunk", "PjitFunction", "ExecuteHelper", "$", "TfrtCpu", "PjRt")) or " " in n: continue
    names[n] += e["dur"]
for n, t in names.items():
    fam[family(n)] += t
tot = sum(fam.values())
print(f"{a.model} b{a.batch} {a.size}px native={a.native}: thunk time {tot/1e3/a.steps:.1f} ms/step (sum over threads)")
for k, v in fam.most_common(): print(f"  {k:32s} {100*v/tot:5.1f}%  {v/1e3/a.steps:8.1f} ms/step")
if os.environ.get("TOP"):
    for n, t in names.most_common(int(os.environ["TOP"])): print("   ", n, round(t/1e3/a.steps, 2))
