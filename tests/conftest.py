"""Shared test setup: a persistent XLA compilation cache so repeated runs skip recompiling."""
import os

import jax

jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jaxcam-test-xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
