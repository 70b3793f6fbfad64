"""Native kernels called through `jax.ffi` (built at install time from conv_dnnl.cc).

`conv_dnnl.cc` runs 2-D convolutions (NHWC x HWIO, float32 or bfloat16, grouped too: forward, input
gradient, kernel gradient), training-mode batch normalization (float32 or bfloat16 activations,
float32 scale, shift and statistics), inference batch normalization's gradient and the max-pooling
gradient (float32 or bfloat16) through oneDNN primitives, the library torch's CPU kernels use. The compiled handler library
(`_conv_dnnl*.so`, built by setup.py) needs oneDNN's `libdnnl.so.3` from the `onednn-cpu-gomp`
package (a runtime dependency; GNU OpenMP threading).

Nothing is loaded on import. `available()` loads both libraries and registers the FFI targets the first
time it is asked; if anything is missing it returns False and warns ONCE, and `jaxcam.nn` keeps its
XLA formulation. `JAXCAM_NATIVE=0` turns the native path off.

bfloat16 (`bf16_available()`) is used where oneDNN has native bfloat16 kernels: a CPU with AVX512-BF16
or AMX (elsewhere oneDNN emulates bfloat16, slower than XLA's). `JAXCAM_NATIVE_BF16=0` keeps bfloat16 on
XLA, `JAXCAM_NATIVE_BF16=1` sends it to oneDNN on any CPU (for testing).
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
import warnings

_lock = threading.Lock()
_state = {"loaded": None, "error": None, "lib": None, "bf16": None}

TARGETS = {
    "jaxcam_conv_fwd": "JaxcamConvFwd",
    "jaxcam_conv_bwd_data": "JaxcamConvBwdData",
    "jaxcam_conv_bwd_weights": "JaxcamConvBwdWeights",
    "jaxcam_bn_fwd": "JaxcamBnFwd",
    "jaxcam_bn_bwd": "JaxcamBnBwd",
    "jaxcam_affine_bwd": "JaxcamAffineBwd",
    "jaxcam_pool_bwd_from_input": "JaxcamPoolBwdFromInput",
}


def _libdnnl_path() -> str:
    """libdnnl.so.3 as installed by the `onednn-cpu-gomp` distribution (under the environment's lib/)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("onednn-cpu-gomp")
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("the onednn-cpu-gomp package is not installed") from None
    for f in dist.files or ():
        if f.name == "libdnnl.so.3":
            path = os.path.realpath(dist.locate_file(f))
            if os.path.exists(path):
                return path
    raise FileNotFoundError("onednn-cpu-gomp is installed but its libdnnl.so.3 is missing")


def _extension_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_conv_dnnl*.so")))
    if not found:
        raise FileNotFoundError(f"no compiled _conv_dnnl*.so in {here} (the package was installed without "
                                "its native extension)")
    return found[0]


def _load():
    import jax

    ctypes.CDLL(_libdnnl_path(), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(_extension_path())
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    _state["lib"] = lib


def available() -> bool:
    """True when the oneDNN convolution targets are registered (loads them on first call)."""
    if _state["loaded"] is not None:
        return _state["loaded"]
    with _lock:
        if _state["loaded"] is None:
            if os.environ.get("JAXCAM_NATIVE", "1") == "0":
                _state["loaded"] = False
            else:
                try:
                    _load()
                    _state["loaded"] = True
                except Exception as e:  # any failure means: use the XLA formulation
                    _state["loaded"], _state["error"] = False, f"{type(e).__name__}: {e}"
                    warnings.warn(f"jaxcam: native oneDNN convolutions unavailable ({_state['error']}); "
                                  "using the XLA formulation (slower training on CPU)", RuntimeWarning, stacklevel=2)
    return _state["loaded"]


def error() -> str | None:
    """Why `available()` is False (None if it is True, was switched off, or was not asked yet)."""
    return _state["error"]


def bf16_native_isa() -> bool:
    """True when oneDNN's effective ISA on this CPU has native bfloat16 kernels (AVX512-BF16 or AMX)."""
    if not available():
        return False
    fn = getattr(_state.get("lib"), "JaxcamBf16Native", None)
    return bool(fn is not None and fn())


def bf16_available() -> bool:
    """True when bfloat16 convolutions (and the pooling gradient) go to oneDNN: the library loaded and
    either the CPU has native bfloat16 kernels or ``JAXCAM_NATIVE_BF16=1``; ``JAXCAM_NATIVE_BF16=0``
    keeps them on XLA. Decided once per process."""
    if _state.get("bf16") is None:
        setting = os.environ.get("JAXCAM_NATIVE_BF16", "")
        if setting == "0":
            _state["bf16"] = False
        elif setting == "1":
            _state["bf16"] = available()
        else:
            _state["bf16"] = bf16_native_isa()
    return _state["bf16"]
