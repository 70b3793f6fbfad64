"""Builds jaxcam's optional native extension (jaxcam/_native/conv_dnnl.cc: oneDNN convolutions as XLA
FFI handlers). Everything else is in pyproject.toml.

Build requirements (pyproject's [build-system]): jaxlib for the XLA FFI headers, onednn-devel-cpu-gomp
for oneDNN's headers, onednn-cpu-gomp for libdnnl.so to link against. The extension is optional: if it
cannot be built the package still installs and jaxcam.nn uses its XLA formulation (with one warning).
"""
import os
from importlib import metadata, util

from setuptools import Extension, setup


def _dist_dir(dist_name, file_name):
    """The folder holding file_name (a path tail) in an installed distribution (data files live under
    the environment's prefix: include/, lib/)."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace(os.sep, "/").endswith(file_name):
            return os.path.dirname(os.path.realpath(dist.locate_file(f)))
    return None


def _native_extension():
    jaxlib = util.find_spec("jaxlib")
    header = _dist_dir("onednn-devel-cpu-gomp", "/oneapi/dnnl/dnnl.hpp")  # .../include/oneapi/dnnl
    libdir = _dist_dir("onednn-cpu-gomp", "/libdnnl.so")
    if jaxlib is None or header is None or libdir is None:
        print("jaxcam: building without the native oneDNN extension (jaxlib / onednn-devel-cpu-gomp / "
              "onednn-cpu-gomp not found at build time)")
        return []
    ffi_include = os.path.join(list(jaxlib.submodule_search_locations)[0], "include")
    return [Extension(
        "jaxcam._native._conv_dnnl",
        sources=["jaxcam/_native/conv_dnnl.cc"],
        include_dirs=[ffi_include, os.path.dirname(os.path.dirname(header))],
        library_dirs=[libdir],
        libraries=["dnnl"],  # NEEDED libdnnl.so.3; loaded at run time from onednn-cpu-gomp (jaxcam/_native)
        # found without the ctypes preload too (a plain `import jaxcam._native._conv_dnnl`): the installed
        # onednn-cpu-gomp puts it in <prefix>/lib, four levels above <prefix>/lib/pythonX.Y/site-packages/
        # jaxcam/_native; the build-time folder serves in-place builds
        runtime_library_dirs=["$ORIGIN/../../../..", libdir],
        language="c++",
        extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden", "-w"],
        optional=True,
    )]


setup(ext_modules=_native_extension())
