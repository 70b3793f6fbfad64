// 2-D convolution (NHWC activations, HWIO kernels, float32 or bfloat16), training-mode batch normalization
// and the max-pooling gradient through oneDNN primitives, as XLA FFI handlers: convolution forward,
// input gradient (backward data) and kernel gradient (backward weights); batch normalization forward
// (with the batch statistics) and backward; the gradient of a per-channel affine map (inference batch
// normalization); max pooling's backward from its input.
//
// Every primitive has its own scratchpad (user-managed): with oneDNN's default, library-managed
// scratchpad, a primitive created on one of XLA's threads and run on another overflowed the running
// thread's smaller scratchpad (a crash in gemm_convolution_bwd_weights' im2col on AVX2 machines).
//
// Activations stay in the caller's NHWC buffers (oneDNN's native channels-last layout); kernels
// are reordered between HWIO and the primitive's preferred blocked layout. Primitives are created
// once per shape and cached. Execution is serialized by one mutex: each primitive already uses
// every OpenMP thread, and the cached primitives share their scratch buffers.
//
// Convolutions and the pooling gradient take float32 or bfloat16 buffers (all operands of one call the same
// type; bfloat16 primitives accumulate in float32 and round their result to bfloat16, as XLA's bfloat16
// convolutions do). Batch normalization takes float32 or bfloat16 activations with float32 scale, shift
// and statistics. `JaxcamBf16Native()` says whether oneDNN has
// native bfloat16 kernels on this CPU (AVX512-BF16 or AMX); without them its bfloat16 path is emulated or
// reference code, and jaxcam.nn keeps XLA's.
//
// The library is loaded with ctypes (jaxcam/_native/__init__.py); it also defines an empty Python
// module so that importing `jaxcam._native._conv_dnnl` (as package walkers do) works.
#include <Python.h>  // first, as Python's headers require

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
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
  int64_t g;            // feature groups (C for a depthwise convolution)
  dt type;              // every operand's element type (f32 or bf16)
  auto key() const {
    return std::make_tuple(n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr, g, static_cast<int64_t>(type));
  }
};

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::primitive_attr& attr() {
  static dnnl::primitive_attr a = [] {
    dnnl::primitive_attr x;
    x.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return x;
  }();
  return a;
}

memory scratchpad(const memory::desc& md) { return memory(md, engine()); }

dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

std::mutex& lock() {
  static std::mutex m;
  return m;
}

// The cached value for `key`, made by `make()` (a std::unique_ptr) the first time it is asked for.
template <typename K, typename V, typename F>
V* cached(std::map<K, std::unique_ptr<V>>& cache, const K& key, F&& make) {
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  return cache.emplace(key, make()).first->second.get();
}

struct Descs {
  memory::desc src, wei_any, wei_user, dst;
  memory::dims strides, pad_l, pad_r;
  dnnl::convolution_forward::primitive_desc fwd;
};

// The caller's buffers: NHWC activations, the HWIO kernel.
void user_descs(const Geometry& g, Descs& d) {
  d.src = memory::desc({g.n, g.c, g.h, g.w}, g.type, tag::nhwc);
  d.dst = memory::desc({g.n, g.o, g.oh, g.ow}, g.type, tag::nhwc);
  if (g.g == 1) {
    d.wei_any = memory::desc({g.o, g.c, g.kh, g.kw}, g.type, tag::any);
    d.wei_user = memory::desc({g.o, g.c, g.kh, g.kw}, g.type, tag::hwio);
  } else {  // XLA's grouped HWIO kernel (kh, kw, c/g, o), output channels group-major: oneDNN's hwigo
    d.wei_any = memory::desc({g.g, g.o / g.g, g.c / g.g, g.kh, g.kw}, g.type, tag::any);
    d.wei_user = memory::desc({g.g, g.o / g.g, g.c / g.g, g.kh, g.kw}, g.type, tag::hwigo);
  }
}

Descs make_descs(const Geometry& g) {
  Descs d;
  user_descs(g, d);
  d.strides = {g.sh, g.sw};
  d.pad_l = {g.pt, g.pl};
  d.pad_r = {g.pb, g.pr};
  d.fwd = dnnl::convolution_forward::primitive_desc(
      engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, d.src, d.wei_any,
      d.dst, d.strides, d.pad_l, d.pad_r, attr());
  return d;
}

// A primitive plus the kernel reorder (HWIO <-> its layout) it needs, and the kernel buffer.
struct Entry {
  dnnl::primitive prim;
  bool reorder_wei = false;
  dnnl::reorder wei_reorder;
  memory wei_mem;  // kernel in the primitive's layout (when it differs from HWIO)
  memory scratch;
  memory::desc src, dst, wei_user;
  std::string impl;  // oneDNN's implementation name (pd.impl_info_str())
  // bfloat16 kernel gradient only: the activations (NHWC) reordered into the blocked layouts the
  // primitive asked for (oneDNN 3.2's bfloat16 backward-weights kernel on NHWC is ~10x slower)
  bool reorder_act = false;
  dnnl::reorder src_reorder, dst_reorder;
  memory src_mem, dst_mem;
};

using Key = std::tuple<int, std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>>;

std::map<Key, std::unique_ptr<Entry>>& cache() {
  static std::map<Key, std::unique_ptr<Entry>> c;
  return c;
}

enum Op { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

// The primitive of `pd` and its own scratchpad; returns the weights layout it wants.
template <class Prim, class PD>
memory::desc install(Entry& e, const PD& pd, const memory::desc& weights) {
  e.prim = Prim(pd);
  e.impl = pd.impl_info_str();
  e.scratch = scratchpad(pd.scratchpad_desc());
  return weights;
}

// Both backward passes take the same descriptors, hinted by the forward.
template <class PD>
PD backward_pd(const Descs& d) {
  return PD(engine(), dnnl::algorithm::convolution_direct, d.src, d.wei_any, d.dst, d.strides, d.pad_l, d.pad_r,
            d.fwd, attr());
}

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
    wei_prim = install<dnnl::convolution_forward>(*e, d.fwd, d.fwd.weights_desc());
  } else if (op == kBwdData) {
    auto pd = backward_pd<dnnl::convolution_backward_data::primitive_desc>(d);
    // oneDNN 3.2 ranks brgconv_strided first for bfloat16 strided grouped (depthwise) input gradients,
    // 50-300x slower than the next one, jit_dw (EfficientNet-Lite0's stride-2 depthwise layers at 128 px,
    // batch 32: 75-215 ms against float32's 0.7-17 ms)
    if (g.type == dt::bf16 && g.g > 1) {
      while (std::string(pd.impl_info_str()).find("brgconv_strided") != std::string::npos && pd.next_impl()) {
      }
    }
    wei_prim = install<dnnl::convolution_backward_data>(*e, pd, pd.weights_desc());
  } else if (g.type == dt::bf16) {
    // activations in whatever layout the primitive prefers (reordered from NHWC when it differs)
    memory::desc src_any({g.n, g.c, g.h, g.w}, g.type, tag::any), dst_any({g.n, g.o, g.oh, g.ow}, g.type, tag::any);
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        engine(), dnnl::algorithm::convolution_direct, src_any, d.wei_any, dst_any, d.strides, d.pad_l, d.pad_r,
        d.fwd, attr());
    wei_prim = install<dnnl::convolution_backward_weights>(*e, pd, pd.diff_weights_desc());
    if (pd.src_desc() != d.src || pd.diff_dst_desc() != d.dst) {
      e->reorder_act = true;
      e->src_mem = memory(pd.src_desc(), engine());
      e->dst_mem = memory(pd.diff_dst_desc(), engine());
      e->src_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), d.src, engine(), pd.src_desc()));
      e->dst_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), d.dst, engine(), pd.diff_dst_desc()));
    }
  } else {
    auto pd = backward_pd<dnnl::convolution_backward_weights::primitive_desc>(d);
    wei_prim = install<dnnl::convolution_backward_weights>(*e, pd, pd.diff_weights_desc());
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

// The oneDNN element type shared by every buffer of a call: f32 or bf16, else an error.
dt element_type(std::initializer_list<ffi::DataType> types) {
  ffi::DataType first = *types.begin();
  for (ffi::DataType t : types) {
    if (t != first) throw std::invalid_argument("jaxcam: operands of one oneDNN call must share their dtype");
  }
  if (first == ffi::DataType::F32) return dt::f32;
  if (first == ffi::DataType::BF16) return dt::bf16;
  throw std::invalid_argument("jaxcam: oneDNN handlers take float32 or bfloat16 buffers");
}

Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                  int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups, dt type) {
  return Geometry{x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2], sh, sw, pt, pb, pl, pr, groups, type};
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

// The kernel in the layout the primitive wants: the user's HWIO buffer, or its reordered copy.
memory weights(Entry& e, void* hwio) {
  memory user(e.wei_user, engine(), hwio);
  if (!e.reorder_wei) return user;
  e.wei_reorder.execute(stream(), user, e.wei_mem);
  return e.wei_mem;
}

ffi::Error ConvFwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t sh,
                       int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups) {
  return guarded([&] {
    dt type = element_type({x.element_type(), w.element_type(), y->element_type()});
    Geometry g = geometry(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr, groups, type);
    Entry* e = get(kFwd, g);
    Entry& d = *e;
    memory src(d.src, engine(), x.untyped_data());
    memory wei = weights(*e, w.untyped_data());
    memory dst(d.dst, engine(), y->untyped_data());
    e->prim.execute(stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, e->scratch}});
    stream().wait();
  });
}

// g: (N, OH, OW, O) cotangent; w: HWIO; dx: (N, H, W, C).
ffi::Error ConvBwdDataImpl(ffi::AnyBuffer g_, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups) {
  return guarded([&] {
    dt type = element_type({g_.element_type(), w.element_type(), dx->element_type()});
    Geometry g = geometry(dx->dimensions(), w.dimensions(), g_.dimensions(), sh, sw, pt, pb, pl, pr, groups, type);
    Entry* e = get(kBwdData, g);
    Entry& d = *e;
    memory diff_dst(d.dst, engine(), g_.untyped_data());
    memory wei = weights(*e, w.untyped_data());
    memory diff_src(d.src, engine(), dx->untyped_data());
    e->prim.execute(stream(), {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, diff_src},
                            {DNNL_ARG_SCRATCHPAD, e->scratch}});
    stream().wait();
  });
}

// The kernel gradient with entry `e` into the HWIO buffer `diff_wei_user` (src, diff_dst: NHWC).
void bwd_weights_run(Entry& e, memory src, memory diff_dst, memory diff_wei_user) {
  if (e.reorder_act) {
    e.src_reorder.execute(stream(), src, e.src_mem);
    e.dst_reorder.execute(stream(), diff_dst, e.dst_mem);
    src = e.src_mem;
    diff_dst = e.dst_mem;
  }
  memory diff_wei = e.reorder_wei ? e.wei_mem : diff_wei_user;
  e.prim.execute(stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                            {DNNL_ARG_SCRATCHPAD, e.scratch}});
  if (e.reorder_wei) e.wei_reorder.execute(stream(), diff_wei, diff_wei_user);
}

// A bfloat16 kernel gradient through the float32 primitive: both operands widened to float32 (exact),
// the float32 result rounded to bfloat16 once -- the same value as the bfloat16 primitive's up to the
// order of the float32 sums (that one also accumulates in float32). Used where oneDNN 3.2 has only a gemm
// or reference bfloat16 kernel for the shape (5x5 depthwise: 11-13 ms against 3.6-6.2 widened,
// EfficientNet-Lite0 at 128 px, batch 32, Zen 4). Everywhere else the bfloat16 primitive, with its
// activations in the blocked layouts it asks for, is faster: 1.05-3.3x over every ResNet-18/20 and Lite0
// layer measured (notes/session-11.md; e.g. ResNet-18 at 128 px, batch 32, 3x3 on 4x4 maps: 6.7 ms against
// 11.1). The 10-20x slowdown of the bfloat16 kernel on small or strided outputs measured earlier
// (notes/s8-issue-25.md) predates the reorder of the activations into those layouts. Measured on AMD Zen 4
// (AVX512-BF16) only: JAXCAM_BF16_KERNEL_GRAD=f32 restores the widened route on other CPUs if it is slower.
// `use_bf16_kernel_grad` decides by shape, deterministically (the same choice, hence the same bits, on
// every run).
struct Widened {
  Entry* f32 = nullptr;  // the float32 kernel-gradient entry of the same geometry
  memory src, dst, wei;  // float32 NHWC operands and the float32 HWIO result
  dnnl::reorder src_up, dst_up, wei_down;
};

Widened* widened(const Geometry& g) {
  static std::map<decltype(g.key()), std::unique_ptr<Widened>> cache;
  return cached(cache, g.key(), [&] {
    Descs e16;  // the bfloat16 buffers' descriptors
    user_descs(g, e16);
    auto w = std::make_unique<Widened>();
    Geometry g32 = g;
    g32.type = dt::f32;
    w->f32 = get(kBwdWeights, g32);
    w->src = memory(w->f32->src, engine());
    w->dst = memory(w->f32->dst, engine());
    w->wei = memory(w->f32->wei_user, engine());
    w->src_up = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), e16.src, engine(), w->f32->src));
    w->dst_up = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), e16.dst, engine(), w->f32->dst));
    w->wei_down = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), w->f32->wei_user, engine(), e16.wei_user));
    return w;
  });
}

void bwd_weights_widened(Widened& w, memory src, memory diff_dst, memory diff_wei_user) {
  w.src_up.execute(stream(), src, w.src);
  w.dst_up.execute(stream(), diff_dst, w.dst);
  bwd_weights_run(*w.f32, w.src, w.dst, w.wei);
  w.wei_down.execute(stream(), w.wei, diff_wei_user);
}

// Whether a bfloat16 kernel gradient runs the bfloat16 primitive (else widened to float32):
// JAXCAM_BF16_KERNEL_GRAD=bf16 / f32 forces one (for tests and benchmarks); by default the bfloat16
// primitive unless oneDNN has only a gemm or reference bfloat16 implementation for the shape (see Widened).
bool use_bf16_kernel_grad(const Geometry& g) {
  const char* v = std::getenv("JAXCAM_BF16_KERNEL_GRAD");
  if (v != nullptr && std::strcmp(v, "bf16") == 0) return true;
  if (v != nullptr && std::strcmp(v, "f32") == 0) return false;
  const std::string& impl = get(kBwdWeights, g)->impl;
  return impl.find("gemm") == std::string::npos && impl.find("ref") == std::string::npos;
}

// x: (N, H, W, C); g: (N, OH, OW, O); dw: HWIO.
ffi::Error ConvBwdWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer g_, ffi::Result<ffi::AnyBuffer> dw,
                              int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t groups) {
  return guarded([&] {
    dt type = element_type({x.element_type(), g_.element_type(), dw->element_type()});
    Geometry g = geometry(x.dimensions(), dw->dimensions(), g_.dimensions(), sh, sw, pt, pb, pl, pr, groups, type);
    Descs user;
    user_descs(g, user);
    memory src(user.src, engine(), x.untyped_data());
    memory diff_dst(user.dst, engine(), g_.untyped_data());
    memory diff_wei_user(user.wei_user, engine(), dw->untyped_data());
    if (type == dt::bf16 && !use_bf16_kernel_grad(g)) {
      bwd_weights_widened(*widened(g), src, diff_dst, diff_wei_user);
    } else {
      bwd_weights_run(*get(kBwdWeights, g), src, diff_dst, diff_wei_user);
    }
    stream().wait();
  });
}

// ---------------------------------------------------------------- batch normalization (training)
//
// Over N, H, W of an NHWC tensor: mean, biased variance (as flax), y = (x - mean) / sqrt(var + eps) *
// scale + shift; the backward gives the input, scale and shift gradients. oneDNN's primitives in the
// nhwc layout, created once per (shape, eps) and cached like the convolutions'.

struct BnEntry {
  dnnl::batch_normalization_forward fwd;
  dnnl::batch_normalization_backward bwd;
  memory::desc data, vec;
  memory fwd_scratch, bwd_scratch;
};

using BnKey = std::tuple<int64_t, int64_t, int64_t, int64_t, float, int64_t>;

// type: the activations' (x, y, dy, dx: f32 or bf16); scale, shift, statistics and their gradients are f32.
BnEntry* bn_get(int64_t n, int64_t h, int64_t w, int64_t c, float eps, dt type) {
  static std::map<BnKey, std::unique_ptr<BnEntry>> cache;
  return cached(cache, BnKey{n, h, w, c, eps, static_cast<int64_t>(type)}, [&] {
    auto e = std::make_unique<BnEntry>();
    e->data = memory::desc({n, c, h, w}, type, tag::nhwc);
    e->vec = memory::desc({c}, dt::f32, tag::x);
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    auto fwd_pd = dnnl::batch_normalization_forward::primitive_desc(
        engine(), dnnl::prop_kind::forward_training, e->data, e->data, eps, flags, attr());
    auto bwd_pd = dnnl::batch_normalization_backward::primitive_desc(
        engine(), dnnl::prop_kind::backward, e->data, e->data, e->data, eps, flags, fwd_pd, attr());
    e->fwd_scratch = scratchpad(fwd_pd.scratchpad_desc());
    e->bwd_scratch = scratchpad(bwd_pd.scratchpad_desc());
    e->fwd = dnnl::batch_normalization_forward(fwd_pd);
    e->bwd = dnnl::batch_normalization_backward(bwd_pd);
    return e;
  });
}

// x: (N, H, W, C); scale, shift: (C,) -> y: (N, H, W, C), mean, var: (C,).
ffi::Error BnFwdImpl(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                     ffi::Result<ffi::AnyBuffer> y, ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                     float eps) {
  return guarded([&] {
    auto d = x.dimensions();
    BnEntry* e = bn_get(d[0], d[1], d[2], d[3], eps, element_type({x.element_type(), y->element_type()}));
    auto m = [&](const memory::desc& md, void* p) { return memory(md, engine(), p); };
    e->fwd.execute(stream(), {{DNNL_ARG_SRC, m(e->data, x.untyped_data())},
                              {DNNL_ARG_DST, m(e->data, y->untyped_data())},
                              {DNNL_ARG_SCALE, m(e->vec, scale.typed_data())},
                              {DNNL_ARG_SHIFT, m(e->vec, shift.typed_data())},
                              {DNNL_ARG_MEAN, m(e->vec, mean->typed_data())},
                              {DNNL_ARG_VARIANCE, m(e->vec, var->typed_data())},
                              {DNNL_ARG_SCRATCHPAD, e->fwd_scratch}});
    stream().wait();
  });
}

// x, g: (N, H, W, C); mean, var, scale: (C,) -> dx: (N, H, W, C), dscale, dshift: (C,).
ffi::Error BnBwdImpl(ffi::AnyBuffer x, ffi::AnyBuffer g, ffi::Buffer<ffi::F32> mean,
                     ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> scale, ffi::Result<ffi::AnyBuffer> dx,
                     ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dshift, float eps) {
  return guarded([&] {
    auto d = x.dimensions();
    BnEntry* e = bn_get(d[0], d[1], d[2], d[3], eps,
                        element_type({x.element_type(), g.element_type(), dx->element_type()}));
    auto m = [&](const memory::desc& md, void* p) { return memory(md, engine(), p); };
    e->bwd.execute(stream(), {{DNNL_ARG_SRC, m(e->data, x.untyped_data())},
                              {DNNL_ARG_DIFF_DST, m(e->data, g.untyped_data())},
                              {DNNL_ARG_MEAN, m(e->vec, mean.typed_data())},
                              {DNNL_ARG_VARIANCE, m(e->vec, var.typed_data())},
                              {DNNL_ARG_SCALE, m(e->vec, scale.typed_data())},
                              {DNNL_ARG_DIFF_SRC, m(e->data, dx->untyped_data())},
                              {DNNL_ARG_DIFF_SCALE, m(e->vec, dscale->typed_data())},
                              {DNNL_ARG_DIFF_SHIFT, m(e->vec, dshift->typed_data())},
                              {DNNL_ARG_SCRATCHPAD, e->bwd_scratch}});
    stream().wait();
  });
}

// ---------------------------------------------------------------- per-channel affine map (the gradient)
//
// The transpose of y = (x - m) * a + b over the last axis of x (inference BatchNorm, a = scale /
// sqrt(var + eps)): given the cotangent g, dx = g * a, da = sum(g * (x - m)), db = sum(g), sums over
// every row. One pass of oneDNN's batch normalization backward with global statistics (mean m,
// variance 1, epsilon 0: its 1 / sqrt(var + eps) is exactly 1), on x viewed as (rows, C, 1, 1) nhwc, so
// any rank works.

struct AffineEntry {
  dnnl::batch_normalization_backward bwd;
  memory::desc data, vec;
  memory scratch;
  std::vector<float> ones;
};

using AffineKey = std::tuple<int64_t, int64_t, int64_t>;

AffineEntry* affine_get(int64_t rows, int64_t c, dt type) {
  static std::map<AffineKey, std::unique_ptr<AffineEntry>> cache;
  return cached(cache, AffineKey{rows, c, static_cast<int64_t>(type)}, [&] {
    auto e = std::make_unique<AffineEntry>();
    e->data = memory::desc({rows, c, 1, 1}, type, tag::nhwc);
    e->vec = memory::desc({c}, dt::f32, tag::x);
    e->ones.assign(static_cast<size_t>(c), 1.0f);
    auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
                 dnnl::normalization_flags::use_shift;
    auto fwd_pd = dnnl::batch_normalization_forward::primitive_desc(
        engine(), dnnl::prop_kind::forward_training, e->data, e->data, 0.0f, flags, attr());
    auto bwd_pd = dnnl::batch_normalization_backward::primitive_desc(
        engine(), dnnl::prop_kind::backward, e->data, e->data, e->data, 0.0f, flags, fwd_pd, attr());
    e->scratch = scratchpad(bwd_pd.scratchpad_desc());
    e->bwd = dnnl::batch_normalization_backward(bwd_pd);
    return e;
  });
}

// g, x: (..., C); m, a: (C,) -> dx: (..., C), da, db: (C,).
ffi::Error AffineBwdImpl(ffi::AnyBuffer g, ffi::AnyBuffer x, ffi::Buffer<ffi::F32> m, ffi::Buffer<ffi::F32> a,
                         ffi::Result<ffi::AnyBuffer> dx, ffi::ResultBuffer<ffi::F32> da,
                         ffi::ResultBuffer<ffi::F32> db) {
  return guarded([&] {
    auto d = x.dimensions();
    int64_t c = d.back(), rows = 1;
    for (size_t i = 0; i + 1 < d.size(); ++i) rows *= d[i];
    AffineEntry* e = affine_get(rows, c, element_type({g.element_type(), x.element_type(), dx->element_type()}));
    auto mem = [&](const memory::desc& md, void* p) { return memory(md, engine(), p); };
    e->bwd.execute(stream(), {{DNNL_ARG_SRC, mem(e->data, x.untyped_data())},
                              {DNNL_ARG_DIFF_DST, mem(e->data, g.untyped_data())},
                              {DNNL_ARG_MEAN, mem(e->vec, m.typed_data())},
                              {DNNL_ARG_VARIANCE, mem(e->vec, e->ones.data())},
                              {DNNL_ARG_SCALE, mem(e->vec, a.typed_data())},
                              {DNNL_ARG_DIFF_SRC, mem(e->data, dx->untyped_data())},
                              {DNNL_ARG_DIFF_SCALE, mem(e->vec, da->typed_data())},
                              {DNNL_ARG_DIFF_SHIFT, mem(e->vec, db->typed_data())},
                              {DNNL_ARG_SCRATCHPAD, e->scratch}});
    stream().wait();
  });
}

// ---------------------------------------------------------------- max pooling (gradient)
//
// The gradient of max over k x k windows of an NHWC tensor (padding never wins, as -inf padding): the
// pooling forward is re-run into scratch buffers for its workspace (which window position won: the
// first maximum in row-major window order, as XLA's select_and_scatter and torch pick it), then the
// backward routes each output cotangent to that position. The value itself is XLA's reduce_window.

struct PoolEntry {
  dnnl::pooling_forward fwd;
  dnnl::pooling_backward bwd;
  memory::desc src, dst;
  memory ws, dst_scratch, fwd_scratch, bwd_scratch;
};

using PoolKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

PoolEntry* pool_get(const int64_t* x, const int64_t* y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                    int64_t pt, int64_t pb, int64_t pl, int64_t pr, dt type) {
  static std::map<PoolKey, std::unique_ptr<PoolEntry>> cache;
  PoolKey key{x[0], x[1], x[2], x[3], y[1], y[2], kh, kw, sh, sw, pt, pb, pl, pr, static_cast<int64_t>(type)};
  return cached(cache, key, [&] {
    auto e = std::make_unique<PoolEntry>();
    e->src = memory::desc({x[0], x[3], x[1], x[2]}, type, tag::nhwc);
    e->dst = memory::desc({y[0], y[3], y[1], y[2]}, type, tag::nhwc);
    auto fwd_pd = dnnl::pooling_forward::primitive_desc(
        engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, e->src, e->dst, {sh, sw},
        {kh, kw}, {0, 0}, {pt, pl}, {pb, pr}, attr());
    auto bwd_pd = dnnl::pooling_backward::primitive_desc(
        engine(), dnnl::algorithm::pooling_max, e->src, e->dst, {sh, sw}, {kh, kw}, {0, 0}, {pt, pl}, {pb, pr},
        fwd_pd, attr());
    e->fwd = dnnl::pooling_forward(fwd_pd);
    e->bwd = dnnl::pooling_backward(bwd_pd);
    e->ws = memory(fwd_pd.workspace_desc(), engine());
    e->dst_scratch = memory(e->dst, engine());
    e->fwd_scratch = scratchpad(fwd_pd.scratchpad_desc());
    e->bwd_scratch = scratchpad(bwd_pd.scratchpad_desc());
    return e;
  });
}

// g: (N, OH, OW, C), x: the forward's input -> dx: (N, H, W, C).
ffi::Error PoolBwdFromInputImpl(ffi::AnyBuffer g, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> dx,
                                int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                                int64_t pr) {
  return guarded([&] {
    dt type = element_type({g.element_type(), x.element_type(), dx->element_type()});
    PoolEntry* e = pool_get(x.dimensions().begin(), g.dimensions().begin(), kh, kw, sh, sw, pt, pb, pl, pr, type);
    e->fwd.execute(stream(), {{DNNL_ARG_SRC, memory(e->src, engine(), x.untyped_data())},
                              {DNNL_ARG_DST, e->dst_scratch},
                              {DNNL_ARG_WORKSPACE, e->ws},
                              {DNNL_ARG_SCRATCHPAD, e->fwd_scratch}});
    e->bwd.execute(stream(), {{DNNL_ARG_DIFF_DST, memory(e->dst, engine(), g.untyped_data())},
                              {DNNL_ARG_WORKSPACE, e->ws},
                              {DNNL_ARG_DIFF_SRC, memory(e->src, engine(), dx->untyped_data())},
                              {DNNL_ARG_SCRATCHPAD, e->bwd_scratch}});
    stream().wait();
  });
}

}  // namespace

// Window geometry shared by the convolution and pooling handlers: strides, then pads (top, bottom, left, right).
#define I64(NAME) .Attr<int64_t>(NAME)
#define STRIDES_PADS I64("sh") I64("sw") I64("pt") I64("pb") I64("pl") I64("pr")
#define F32_IN .Arg<ffi::Buffer<ffi::F32>>()
#define F32_OUT .Ret<ffi::Buffer<ffi::F32>>()
#define ANY_IN .Arg<ffi::AnyBuffer>()
#define ANY_OUT .Ret<ffi::AnyBuffer>()
#define CONV_BINDING ffi::Ffi::Bind() ANY_IN ANY_IN ANY_OUT STRIDES_PADS I64("groups")

#pragma GCC visibility push(default)
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamConvFwd, ConvFwdImpl, CONV_BINDING);             // x, w -> y
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamConvBwdData, ConvBwdDataImpl, CONV_BINDING);     // g, w -> dx
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamConvBwdWeights, ConvBwdWeightsImpl, CONV_BINDING);  // x, g -> dw
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamPoolBwdFromInput, PoolBwdFromInputImpl,  // g, x -> dx
                              ffi::Ffi::Bind() ANY_IN ANY_IN ANY_OUT I64("kh") I64("kw") STRIDES_PADS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamBnFwd, BnFwdImpl,  // x, scale, shift -> y, mean, var
                              ffi::Ffi::Bind() ANY_IN F32_IN F32_IN ANY_OUT F32_OUT F32_OUT.Attr<float>("eps"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamBnBwd, BnBwdImpl,  // x, g, mean, var, scale -> dx, dscale, dshift
                              ffi::Ffi::Bind() ANY_IN ANY_IN F32_IN F32_IN F32_IN ANY_OUT F32_OUT F32_OUT
                                  .Attr<float>("eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcamAffineBwd, AffineBwdImpl,  // g, x, m, a -> dx, da, db
                              ffi::Ffi::Bind() ANY_IN ANY_IN F32_IN F32_IN ANY_OUT F32_OUT F32_OUT);
// 1 when oneDNN's effective ISA has native bfloat16 kernels (AVX512-BF16: avx512_core_bf16 and up, AMX
// included), else 0 (bfloat16 would run emulated or reference code there: slower than XLA's).
extern "C" int JaxcamBf16Native() {
  try {
    auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    unsigned bf16 = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);
    return (isa & bf16) == bf16 ? 1 : 0;
  } catch (...) {
    return 0;
  }
}
#pragma GCC visibility pop

static struct PyModuleDef conv_dnnl_module = {PyModuleDef_HEAD_INIT, "_conv_dnnl",
                                              "oneDNN convolutions as XLA FFI handlers (loaded via ctypes).",
                                              -1, nullptr};

PyMODINIT_FUNC PyInit__conv_dnnl(void) { return PyModule_Create(&conv_dnnl_module); }
