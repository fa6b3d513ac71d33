// oneDNN convolutions as XLA FFI handlers (cnnjax/ops/onednn/__init__.py
// compiles this file on first use and registers the handlers with jax.ffi).
//
// Layouts are cnnjax's, channels last, so nothing is transposed:
//   x  (N, *spatial, C)            oneDNN nwc / nhwc / ndhwc
//   w  (*window, C / G, O)         oneDNN wio / hwio / dhwio, or with G > 1
//                                  wigo / hwigo / dhwigo (O = G x O/G, g outer,
//                                  as lax's feature_group_count splits it)
//   y  (N, *out_spatial, O)
// Three handlers: forward (x, w -> y), backward data (dy, w -> dx) and
// backward weights (x, dy -> dw), each with the attributes strides, padding
// (low and high per spatial dim), dilation (lax's: 1 = none) and groups.
// float32 and bfloat16; the three buffers share one type.
//
// Primitives are built once per shape and kept (a map under a mutex, which
// also serializes the calls: oneDNN uses every core for each one). oneDNN
// may want the weights in a blocked layout: they are reordered into a
// buffer kept beside the primitive, and back for the weight gradient, by
// reorder primitives built with it.

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"

using namespace cnnjax_dnnl;

namespace {

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

struct Entry {
  dnnl::primitive primitive;
  dnnl::memory::desc src, weights, dst;  // what the primitive takes
  dnnl::memory::desc user_weights;       // cnnjax's (*window, I/G, O)
  std::unique_ptr<dnnl::memory> blocked;  // weights in the primitive's layout
  dnnl::reorder to_blocked, from_blocked;  // built once, with the primitive
};

std::map<std::vector<int64_t>, std::unique_ptr<Entry>>& Cache() {
  static std::map<std::vector<int64_t>, std::unique_ptr<Entry>> cache;
  return cache;
}

Tag WeightsTag(size_t spatial, bool grouped) {
  if (grouped) return spatial == 1 ? Tag::wigo : spatial == 2 ? Tag::hwigo : Tag::dhwigo;
  return spatial == 1 ? Tag::wio : spatial == 2 ? Tag::hwio : Tag::dhwio;
}

// (*window, I/G, O) as (O, I, *window), or (G, O/G, I/G, *window).
Dims WeightDims(const std::vector<int64_t>& shape, int64_t groups) {
  size_t n = shape.size();
  int64_t in = shape[n - 2], out = shape[n - 1];
  Dims dims;
  if (groups > 1) {
    dims = {groups, out / groups, in};
  } else {
    dims = {out, in};
  }
  dims.insert(dims.end(), shape.begin(), shape.end() - 2);
  return dims;
}

struct Geometry {
  std::vector<int64_t> x, w, y;  // cnnjax shapes
  Dims strides, padding_low, padding_high, dilation;  // oneDNN dilation: lax's - 1
  int64_t groups;
  dnnl::memory::data_type type;
};

Entry* Build(Kind kind, const Geometry& g) {
  std::vector<int64_t> key = {kind, static_cast<int64_t>(g.type), g.groups};
  for (const auto* part : {&g.x, &g.w, &g.y}) {
    key.push_back(-1);
    key.insert(key.end(), part->begin(), part->end());
  }
  for (const auto* part : {&g.strides, &g.padding_low, &g.padding_high, &g.dilation}) {
    key.push_back(-2);
    key.insert(key.end(), part->begin(), part->end());
  }
  auto& cache = Cache();
  auto found = cache.find(key);
  if (found != cache.end()) return found->second.get();

  size_t spatial = g.x.size() - 2;
  bool grouped = g.groups > 1;
  dnnl::memory::desc src(ActivationDims(g.x), g.type, ActivationTag(spatial));
  dnnl::memory::desc dst(ActivationDims(g.y), g.type, ActivationTag(spatial));
  Dims weight_dims = WeightDims(g.w, g.groups);
  dnnl::memory::desc user_weights(weight_dims, g.type, WeightsTag(spatial, grouped));
  dnnl::memory::desc any_weights(weight_dims, g.type, Tag::any);

  auto forward = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      src, any_weights, dst, g.strides, g.dilation, g.padding_low, g.padding_high);
  auto entry = std::make_unique<Entry>();
  entry->user_weights = user_weights;
  if (kind == kForward) {
    entry->primitive = dnnl::convolution_forward(forward);
    entry->src = forward.src_desc();
    entry->weights = forward.weights_desc();
    entry->dst = forward.dst_desc();
  } else if (kind == kBackwardData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, src, any_weights, dst, g.strides,
        g.dilation, g.padding_low, g.padding_high, forward);
    entry->primitive = dnnl::convolution_backward_data(pd);
    entry->src = pd.diff_src_desc();
    entry->weights = pd.weights_desc();
    entry->dst = pd.diff_dst_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, src, any_weights, dst, g.strides,
        g.dilation, g.padding_low, g.padding_high, forward);
    entry->primitive = dnnl::convolution_backward_weights(pd);
    entry->src = pd.src_desc();
    entry->weights = pd.diff_weights_desc();
    entry->dst = pd.diff_dst_desc();
  }
  if (entry->weights != user_weights) {
    entry->blocked = std::make_unique<dnnl::memory>(entry->weights, Engine());
    if (kind == kBackwardWeights) {
      entry->from_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(
          Engine(), entry->weights, Engine(), user_weights));
    } else {
      entry->to_blocked = dnnl::reorder(dnnl::reorder::primitive_desc(
          Engine(), user_weights, Engine(), entry->weights));
    }
  }
  Entry* result = entry.get();
  cache.emplace(std::move(key), std::move(entry));
  return result;
}

ffi::Error Check(const Geometry& g) {
  size_t n = g.x.size();
  if (n < 3 || n > 5 || g.w.size() != n || g.y.size() != n) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN convolution: inputs must have 1 to 3 spatial dims");
  }
  size_t spatial = n - 2;
  if (g.strides.size() != spatial || g.padding_low.size() != spatial ||
      g.padding_high.size() != spatial || g.dilation.size() != spatial) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN convolution: one stride, padding and dilation per spatial dim");
  }
  if (g.groups < 1 || g.w.back() % g.groups != 0) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN convolution: output channels must divide into the groups");
  }
  return ffi::Error::Success();
}

// a, b: the two operands; out: the result (see the file's comment).
ffi::Error Run(Kind kind, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer out,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
               ffi::Span<const int64_t> padding_high, ffi::Span<const int64_t> dilation,
               int64_t groups) {
  Geometry g;
  g.type = Type(a.element_type());
  if (g.type == dnnl::memory::data_type::undef || a.element_type() != b.element_type() ||
      a.element_type() != out.element_type()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN convolution: float32 or bfloat16 operands of one type");
  }
  if (kind == kForward) {
    g.x = Shape(a), g.w = Shape(b), g.y = Shape(out);
  } else if (kind == kBackwardData) {
    g.y = Shape(a), g.w = Shape(b), g.x = Shape(out);
  } else {
    g.x = Shape(a), g.y = Shape(b), g.w = Shape(out);
  }
  g.strides.assign(strides.begin(), strides.end());
  g.padding_low.assign(padding_low.begin(), padding_low.end());
  g.padding_high.assign(padding_high.begin(), padding_high.end());
  for (int64_t d : dilation) g.dilation.push_back(d - 1);
  g.groups = groups;
  ffi::Error error = Check(g);
  if (error.failure()) return error;

  try {
    std::lock_guard<std::mutex> lock(Mutex());
    Entry* e = Build(kind, g);
    dnnl::engine& engine = Engine();
    dnnl::stream& stream = Stream();
    void* x_data = kind == kBackwardData ? out.untyped_data() : a.untyped_data();
    void* w_data = kind == kBackwardWeights ? out.untyped_data() : b.untyped_data();
    void* y_data = kind == kForward ? out.untyped_data()
                   : kind == kBackwardData ? a.untyped_data() : b.untyped_data();
    dnnl::memory x(e->src, engine, x_data);
    dnnl::memory y(e->dst, engine, y_data);
    dnnl::memory w_user(e->user_weights, engine, w_data);
    dnnl::memory w = e->blocked ? *e->blocked : w_user;
    if (e->blocked && kind != kBackwardWeights) {
      e->to_blocked.execute(stream, w_user, w);
    }
    if (kind == kForward) {
      e->primitive.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
    } else if (kind == kBackwardData) {
      e->primitive.execute(stream, {{DNNL_ARG_DIFF_SRC, x}, {DNNL_ARG_WEIGHTS, w},
                                    {DNNL_ARG_DIFF_DST, y}});
    } else {
      e->primitive.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_WEIGHTS, w},
                                    {DNNL_ARG_DIFF_DST, y}});
      if (e->blocked) e->from_blocked.execute(stream, w, w_user);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                   ffi::Span<const int64_t> padding_high, ffi::Span<const int64_t> dilation,
                   int64_t groups) {
  return Run(kForward, x, w, *y, strides, padding_low, padding_high, dilation, groups);
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                        ffi::Span<const int64_t> padding_high,
                        ffi::Span<const int64_t> dilation, int64_t groups) {
  return Run(kBackwardData, dy, w, *dx, strides, padding_low, padding_high, dilation, groups);
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Span<const int64_t> strides,
                           ffi::Span<const int64_t> padding_low,
                           ffi::Span<const int64_t> padding_high,
                           ffi::Span<const int64_t> dilation, int64_t groups) {
  return Run(kBackwardWeights, x, dy, *dw, strides, padding_low, padding_high, dilation,
             groups);
}

}  // namespace

#define CNNJAX_CONV_BINDING                                   \
  ffi::Ffi::Bind()                                            \
      .Arg<ffi::AnyBuffer>()                                  \
      .Arg<ffi::AnyBuffer>()                                  \
      .Ret<ffi::AnyBuffer>()                                  \
      .Attr<ffi::Span<const int64_t>>("strides")              \
      .Attr<ffi::Span<const int64_t>>("padding_low")          \
      .Attr<ffi::Span<const int64_t>>("padding_high")         \
      .Attr<ffi::Span<const int64_t>>("dilation")             \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlConvForward, Forward, CNNJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlConvBackwardData, BackwardData, CNNJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlConvBackwardWeights, BackwardWeights,
                              CNNJAX_CONV_BINDING);

// Creates the CPU engine (ctypes, before any handler runs): 0 on success,
// otherwise 1 and oneDNN's message in `message`.
extern "C" int cnnjax_dnnl_probe(char* message, int size) {
  try {
    Engine();
    return 0;
  } catch (const dnnl::error& e) {
    std::strncpy(message, e.what(), size - 1);
    message[size - 1] = '\0';
    return 1;
  }
}

// oneDNN's version, major * 10000 + minor * 100 + patch.
extern "C" int cnnjax_dnnl_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}

// 1 if this CPU has oneDNN convolutions (forward and both gradients) in
// bfloat16, else 0 (CPUs without AVX-512 bf16 or AMX have none).
extern "C" int cnnjax_dnnl_has_bf16() {
  try {
    auto type = dnnl::memory::data_type::bf16;
    dnnl::memory::desc x({2, 8, 8, 8}, type, Tag::nhwc);
    dnnl::memory::desc w({8, 8, 3, 3}, type, Tag::any);
    Dims one = {1, 1}, zero = {0, 0}, pad = {1, 1};
    auto forward = dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x, w,
        x, one, zero, pad, pad, dnnl::primitive_attr(), true);
    if (!forward.get(true)) return 0;
    auto data = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, x, w, x, one, zero, pad, pad, forward,
        dnnl::primitive_attr(), true);
    auto weights = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, x, w, x, one, zero, pad, pad, forward,
        dnnl::primitive_attr(), true);
    return data.get(true) && weights.get(true) ? 1 : 0;
  } catch (const dnnl::error&) {
    return 0;
  }
}
