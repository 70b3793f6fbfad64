// 2-D convolution (NHWC activations, HWIO kernels, float32) through oneDNN primitives, as XLA FFI
// handlers: forward, input gradient (backward data) and kernel gradient (backward weights).
//
// Activations stay in the caller's NHWC buffers (oneDNN's native channels-last layout); kernels
// are reordered between HWIO and the primitive's preferred blocked layout. Primitives are created
// once per shape and cached. Execution is serialized by one mutex: each primitive already uses
// every OpenMP thread, and the cached primitives share their scratch buffers.
//
// The library is loaded with ctypes (jaxcam/_native/__init__.py); it also defines an empty Python
// module so that importing `jaxcam._native._conv_dnnl` (as package walkers do) works.
#include <Python.h>  // first, as Python's headers require

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

struct Geometry {
  int64_t n, h, w, c;   // input
  int64_t kh, kw, o;    // kernel / output channels
  int64_t oh, ow;       // output
  int64_t sh, sw, pt, pb, pl, pr;
  auto key() const { return std::make_tuple(n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr); }
};

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

std::mutex& lock() {
  static std::mutex m;
  return m;
}

struct Descs {
  memory::desc src, wei_any, wei_user, dst;
  memory::dims strides, pad_l, pad_r;
  dnnl::convolution_forward::primitive_desc fwd;
};

Descs make_descs(const Geometry& g) {
  Descs d;
  d.src = memory::desc({g.n, g.c, g.h, g.w}, dt::f32, tag::nhwc);
  d.dst = memory::desc({g.n, g.o, g.oh, g.ow}, dt::f32, tag::nhwc);
  d.wei_any = memory::desc({g.o, g.c, g.kh, g.kw}, dt::f32, tag::any);
  d.wei_user = memory::desc({g.o, g.c, g.kh, g.kw}, dt::f32, tag::hwio);
  d.strides = {g.sh, g.sw};
  d.pad_l = {g.pt, g.pl};
  d.pad_r = {g.pb, g.pr};
  d.fwd = dnnl::convolution_forward::primitive_desc(
      engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, d.src, d.wei_any,
      d.dst, d.strides, d.pad_l, d.pad_r);
  return d;
}

// A primitive plus the kernel reorder (HWIO <-> its layout) it needs, and the kernel buffer.
struct Entry {
  dnnl::primitive prim;
  bool reorder_wei = false;
  dnnl::reorder wei_reorder;
  memory wei_mem;  // kernel in the primitive's layout (when it differs from HWIO)
  memory::desc src, dst, wei_user;
};

using Key = std::tuple<int, std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>>;

std::map<Key, std::unique_ptr<Entry>>& cache() {
  static std::map<Key, std::unique_ptr<Entry>> c;
  return c;
}

enum Op { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

Entry* get(Op op, const Geometry& g) {
  Key key{op, g.key()};
  auto& c = cache();
  auto it = c.find(key);
  if (it != c.end()) return it->second.get();
  Descs d = make_descs(g);
  auto e = std::make_unique<Entry>();
  e->src = d.src;
  e->dst = d.dst;
  e->wei_user = d.wei_user;
  memory::desc wei_prim;
  if (op == kFwd) {
    e->prim = dnnl::convolution_forward(d.fwd);
    wei_prim = d.fwd.weights_desc();
  } else if (op == kBwdData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        engine(), dnnl::algorithm::convolution_direct, d.src, d.wei_any, d.dst, d.strides, d.pad_l, d.pad_r, d.fwd);
    e->prim = dnnl::convolution_backward_data(pd);
    wei_prim = pd.weights_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        engine(), dnnl::algorithm::convolution_direct, d.src, d.wei_any, d.dst, d.strides, d.pad_l, d.pad_r, d.fwd);
    e->prim = dnnl::convolution_backward_weights(pd);
    wei_prim = pd.diff_weights_desc();
  }
  if (wei_prim != d.wei_user) {
    e->reorder_wei = true;
    e->wei_mem = memory(wei_prim, engine());
    if (op == kBwdWeights) {
      e->wei_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), wei_prim, engine(), d.wei_user));
    } else {
      e->wei_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), d.wei_user, engine(), wei_prim));
    }
  }
  Entry* out = e.get();
  c.emplace(key, std::move(e));
  return out;
}

Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                  int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Geometry{x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2], sh, sw, pt, pb, pl, pr};
}

template <typename F>
ffi::Error guarded(F&& f) {
  try {
    std::lock_guard<std::mutex> guard(lock());
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, e.what());
  }
  return ffi::Error::Success();
}

ffi::Error ConvFwdImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y, int64_t sh,
                       int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return guarded([&] {
    Geometry g = geometry(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr);
    Entry* e = get(kFwd, g);
    Entry& d = *e;
    memory src(d.src, engine(), x.typed_data());
    memory wei(d.wei_user, engine(), w.typed_data());
    memory dst(d.dst, engine(), y->typed_data());
    if (e->reorder_wei) {
      e->wei_reorder.execute(stream(), wei, e->wei_mem);
      wei = e->wei_mem;
    }
    e->prim.execute(stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
    stream().wait();
  });
}

// g: (N, OH, OW, O) cotangent; w: HWIO; dx: (N, H, W, C).
ffi::Error ConvBwdDataImpl(ffi::Buffer<ffi::F32> g_, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return guarded([&] {
    Geometry g = geometry(dx->dimensions(), w.dimensions(), g_.dimensions(), sh, sw, pt, pb, pl, pr);
    Entry* e = get(kBwdData, g);
    Entry& d = *e;
    memory diff_dst(d.dst, engine(), g_.typed_data());
    memory wei(d.wei_user, engine(), w.typed_data());
    memory diff_src(d.src, engine(), dx->typed_data());
    if (e->reorder_wei) {
      e->wei_reorder.execute(stream(), wei, e->wei_mem);
      wei = e->wei_mem;
    }
    e->prim.execute(stream(), {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, diff_src}});
    stream().wait();
  });
}

// x: (N, H, W, C); g: (N, OH, OW, O); dw: HWIO.
ffi::Error ConvBwdWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g_, ffi::ResultBuffer<ffi::F32> dw,
                              int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return guarded([&] {
    Geometry g = geometry(x.dimensions(), dw->dimensions(), g_.dimensions(), sh, sw, pt, pb, pl, pr);
    Entry* e = get(kBwdWeights, g);
    Entry& d = *e;
    memory src(d.src, engine(), x.typed_data());
    memory diff_dst(d.dst, engine(), g_.typed_data());
    memory diff_wei_user(d.wei_user, engine(), dw->typed_data());
    memory diff_wei = e->reorder_wei ? e->wei_mem : diff_wei_user;
    e->prim.execute(stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_wei}});
    if (e->reorder_wei) e->wei_reorder.execute(stream(), diff_wei, diff_wei_user);
    stream().wait();
  });
}

}  // namespace

#define CONV_BINDING(ARG0, ARG1)                                                                          \
  ffi::Ffi::Bind()                                                                                       \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                      \
      .Arg<ffi::Buffer<ffi::F32>>()                                                                      \
      .Ret<ffi::Buffer<ffi::F32>>()                                                                      \
      .Attr<int64_t>("sh")                                                                               \
      .Attr<int64_t>("sw")                                                                               \
      .Attr<int64_t>("pt")                                                                               \
      .Attr<int64_t>("pb")                                                                               \
      .Attr<int64_t>("pl")                                                                               \
      .Attr<int64_t>("pr")

#pragma GCC visibility push(default)
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamConvFwd, ConvFwdImpl, CONV_BINDING(x, w));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamConvBwdData, ConvBwdDataImpl, CONV_BINDING(g, w));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamConvBwdWeights, ConvBwdWeightsImpl, CONV_BINDING(x, g));
#pragma GCC visibility pop

static struct PyModuleDef conv_dnnl_module = {PyModuleDef_HEAD_INIT, "_conv_dnnl",
                                              "oneDNN convolutions as XLA FFI handlers (loaded via ctypes).",
                                              -1, nullptr};

PyMODINIT_FUNC PyInit__conv_dnnl(void) { return PyModule_Create(&conv_dnnl_module); }
