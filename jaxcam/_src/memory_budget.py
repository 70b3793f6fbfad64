"""Choose batch and chunk sizes that keep a method's run under a memory limit, from XLA's own figures.

    plan = memory.plan(jaxcam.score_cam, model, image_size=224, batch_size=32, max_bytes=3 << 30)
    plan.batch_size, plan.chunk_size, plan.predicted_bytes

The prediction for one configuration is the resident memory of the process now (Python, jax, the
model's weights) plus what XLA says the compiled step needs (``compiled.memory_analysis()``:
temporaries + arguments + outputs + generated code), found by compiling against abstract shapes
(``jax.ShapeDtypeStruct``, nothing is computed). The search keeps the asked batch size and picks
the chunk (ablated / masked copies per vmapped head run) from the slope between chunks 1 and 2,
checked by a third compile (halved until it fits); when not even chunk 1 fits it halves the batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
from typing import Callable, Optional

import jax
import jax.numpy as jnp

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_bytes(text) -> int:
    """'3G', '3 GiB', '512M', '1.5g', '1000000' -> bytes (binary units). Raises ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"memory size {text!r} not understood: write e.g. 4G, 512M or 2.5GiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return value


def current_rss() -> int:
    """Resident set size of this process now, bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_memory() -> int:
    """Memory the system can give now without swapping (MemAvailable), bytes; 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def default_limit(fraction: float = 0.8) -> int:
    """The automatic limit: what this process has now plus `fraction` of the available memory."""
    return current_rss() + int(fraction * available_memory())


def chunk_keyword(method: Callable) -> Optional[str]:
    """The method's chunk option: ``chunk_size`` (or the older ``batch_size``), None if it has none."""
    params = inspect.signature(method).parameters
    return next((k for k in ("chunk_size", "batch_size") if k in params), None)


def compiled_bytes(method: Callable, model, num_images: int, image_size: int, layer=None, /, **options) -> int:
    """Bytes XLA needs to run ``method(model, x, **options)`` on a (num_images, size, size, 3) float32 batch."""
    x = jax.ShapeDtypeStruct((num_images, image_size, image_size, 3), jnp.float32)
    fn = lambda m, x: method(m, x, layer=layer, **options)  # noqa: E731
    analysis = jax.jit(fn).lower(model, x).compile().memory_analysis()
    if analysis is None:
        raise RuntimeError("this XLA backend gives no memory analysis")
    return int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               + analysis.generated_code_size_in_bytes - analysis.alias_size_in_bytes)


@dataclasses.dataclass
class Plan:
    batch_size: int
    chunk_size: Optional[int]
    predicted_bytes: int
    limit_bytes: int
    tried: list  # (batch, chunk, predicted bytes) for every compiled candidate


def plan(method: Callable, model, *, image_size: int, batch_size: int, max_bytes: Optional[int] = None,
         layer=None, chunk_size: Optional[int] = None, channels: Optional[int] = None,
         baseline: Optional[int] = None, **options) -> Plan:
    """The largest (batch, chunk) at or below the asked ones whose predicted peak stays under `max_bytes`.

    Args:
      method: a jaxcam method (e.g. ``jaxcam.ablation_cam``).
      image_size, batch_size: the run's input size and the images per compiled batch asked for.
      max_bytes: the limit (default: `default_limit()`, from the free memory).
      chunk_size: the largest chunk to consider (default: the number of `channels`, or 256).
      baseline: bytes the process holds besides the run (default: its resident set size now).
      **options: other method options (e.g. ``score="softmax"``).
    Raises:
      ValueError: not even batch 1, chunk 1 fits (the message gives the smallest prediction).
    """
    limit = default_limit() if max_bytes is None else int(max_bytes)
    keyword = chunk_keyword(method)
    base = current_rss() if baseline is None else int(baseline)
    top = chunk_size or channels or 256
    tried = []

    def need(batch, chunk):
        extra = {keyword: chunk} if keyword else {}
        value = base + compiled_bytes(method, model, batch, image_size, layer, **options, **extra)
        tried.append((batch, chunk, value))
        return value

    batch = int(batch_size)
    while True:
        if keyword is None:
            if need(batch, None) <= limit:
                return Plan(batch, None, tried[-1][2], limit, tried)
        else:
            # Memory grows about linearly with the chunk: two small compiles give the slope, a third
            # checks the chunk it points to (halved while it does not fit).
            one = need(batch, 1)
            if one <= limit:
                slope = max(need(batch, 2) - one, 0) if top >= 2 else 0
                chunk = top if slope == 0 else int(min(top, max(1, (limit - one) // slope + 1)))
                while chunk > 1:
                    if (tried[-1][2] if tried[-1][:2] == (batch, chunk) else need(batch, chunk)) <= limit:
                        break
                    chunk //= 2
                return Plan(batch, chunk, next(t[2] for t in reversed(tried) if t[:2] == (batch, chunk)),
                            limit, tried)
        if batch == 1:
            raise ValueError(f"a run needs at least {tried[-1][2] / 2**20:.0f} MiB (batch 1, chunk 1); the limit "
                             f"is {limit / 2**20:.0f} MiB: raise --max-memory")
        batch = max(1, batch // 2)


def limit_argument(text: str):
    """argparse type for --max-memory: a size (4G, 512M, 2.5GiB) or 'auto' (-> None: from the free memory)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def fit(methods, options: dict, model, image_size: int, batch_size: int, layer, limit) -> int:
    """For a command's registry methods: set each chunked method's chunk size in `options` (unless the
    user gave one) and return the batch size every method fits under `limit` ("auto" or bytes) with.

    Methods without a chunk option are not planned (their memory is one batch of forwards/backwards).
    """
    limit = None if limit == "auto" else limit
    for m in methods:
        keyword = chunk_keyword(m.fn)
        if keyword is None:
            continue
        opts = dict(options.get(m.name, {}))
        given = opts.pop("chunk_size", None) or opts.pop("batch_size", None)
        p = plan(m.fn, model, image_size=image_size, batch_size=batch_size, max_bytes=limit, layer=layer,
                 chunk_size=given, **opts)
        options[m.name] = {**opts, keyword: p.chunk_size}
        if p.batch_size < batch_size or not given:
            print(f"--max-memory {p.limit_bytes / 2**20:.0f} MiB: {m.name} runs batch {p.batch_size}, chunk "
                  f"{p.chunk_size} (predicted peak {p.predicted_bytes / 2**20:.0f} MiB)")
        batch_size = p.batch_size
    return batch_size
