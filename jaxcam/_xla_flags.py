"""XLA:CPU settings that make convolutions fast on CPU, applied before jax starts its backend.

Measured on a 2-core CPU (jax/jaxlib 0.10.2): XLA:CPU's YNNPACK fusion made a ResNet-18 forward
3-5x slower, so it is turned off unless the user has set it. Set JAXCAM_KEEP_XLA_FLAGS=1 to leave
XLA_FLAGS untouched.
"""
import os

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"

if not os.environ.get("JAXCAM_KEEP_XLA_FLAGS"):
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}=".strip()
