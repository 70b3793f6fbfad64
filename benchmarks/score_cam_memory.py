"""XLA's own memory analysis of Score-CAM on ResNet-50 layer4 (2048 channels) at 224 px, 1 image.

Compiles only (no run): temp bytes per batch_size, against the 2048 masked copies of the input.
"""
import jax, jax.numpy as jnp, jaxcam
from functools import partial

model = jaxcam.models.resnet50(num_classes=1000)
x = jnp.zeros((1, 224, 224, 3))
all_copies = 2048 * 224 * 224 * 3 * 4
print(f"all 2048 masked inputs at once would be {all_copies / 2**20:.0f} MiB (inputs alone)")
fwd = jax.jit(lambda m, x: m(x)).lower(model, x).compile().memory_analysis()
print(f"one forward: temp {fwd.temp_size_in_bytes / 2**20:.0f} MiB")
for bs in (8, 16, 64):
    f = jax.jit(lambda m, x, bs=bs: jaxcam.score_cam(m, x, layer="layer4", targets=0, chunk_size=bs))
    mem = f.lower(model, x).compile().memory_analysis()
    print(f"score_cam batch_size={bs}: temp {mem.temp_size_in_bytes / 2**20:.0f} MiB")
