// oneDNN max pooling as XLA FFI handlers (compiled with conv.cc into one
// library; cnnjax/ops/onednn/pooling.py calls them).
//
//   x  (N, *spatial, C)   oneDNN nwc / nhwc / ndhwc, 1 to 3 spatial dims
//   y  (N, *out_spatial, C)
//   workspace             where each window's maximum was (oneDNN's format,
//                         bytes; cnnjax_dnnl_max_pool_workspace says how many)
// Three handlers: inference (x -> y), training (x -> y, workspace) and
// backward (dy, workspace -> dx), with the attributes window, strides and
// padding (low and high per spatial dim). Padding takes no part in a
// maximum, as lax.reduce_window's -inf padding; the gradient goes to the
// first maximum of each window, as XLA's select-and-scatter sends it.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"

using namespace cnnjax_dnnl;

namespace {

struct Pool {
  std::vector<int64_t> x, y;  // cnnjax shapes
  Dims window, strides, padding_low, padding_high;
  dnnl::memory::data_type type;
};

struct PoolEntry {
  dnnl::memory::desc src, dst, workspace;
  dnnl::pooling_forward inference, training;
  dnnl::pooling_backward backward;
};

PoolEntry* BuildPool(const Pool& p) {
  static std::map<std::vector<int64_t>, std::unique_ptr<PoolEntry>> cache;
  std::vector<int64_t> key = {static_cast<int64_t>(p.type)};
  for (const auto* part : {&p.x, &p.y, &p.window, &p.strides, &p.padding_low, &p.padding_high}) {
    key.push_back(-1);
    key.insert(key.end(), part->begin(), part->end());
  }
  auto found = cache.find(key);
  if (found != cache.end()) return found->second.get();

  size_t spatial = p.x.size() - 2;
  dnnl::memory::desc src(ActivationDims(p.x), p.type, ActivationTag(spatial));
  dnnl::memory::desc dst(ActivationDims(p.y), p.type, ActivationTag(spatial));
  Dims dilation(spatial, 0);
  auto training = dnnl::pooling_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, src, dst,
      p.strides, p.window, dilation, p.padding_low, p.padding_high);
  auto inference = dnnl::pooling_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, src, dst,
      p.strides, p.window, dilation, p.padding_low, p.padding_high);
  auto backward = dnnl::pooling_backward::primitive_desc(
      Engine(), dnnl::algorithm::pooling_max, src, dst, p.strides, p.window, dilation,
      p.padding_low, p.padding_high, training);
  auto entry = std::make_unique<PoolEntry>();
  entry->src = src;
  entry->dst = dst;
  entry->workspace = training.workspace_desc();
  entry->inference = dnnl::pooling_forward(inference);
  entry->training = dnnl::pooling_forward(training);
  entry->backward = dnnl::pooling_backward(backward);
  PoolEntry* result = entry.get();
  cache.emplace(std::move(key), std::move(entry));
  return result;
}

ffi::Error Describe(const std::vector<int64_t>& x, const std::vector<int64_t>& y,
                    ffi::DataType type, ffi::Span<const int64_t> window,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                    ffi::Span<const int64_t> padding_high, Pool* p) {
  size_t n = x.size();
  if (n < 3 || n > 5 || y.size() != n || window.size() != n - 2 || strides.size() != n - 2 ||
      padding_low.size() != n - 2 || padding_high.size() != n - 2) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN max pooling: 1 to 3 spatial dims, one window, stride and "
                      "padding per spatial dim");
  }
  p->type = Type(type);
  if (p->type == dnnl::memory::data_type::undef) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN max pooling: float32 or bfloat16 operands");
  }
  p->x = x;
  p->y = y;
  p->window.assign(window.begin(), window.end());
  p->strides.assign(strides.begin(), strides.end());
  p->padding_low.assign(padding_low.begin(), padding_low.end());
  p->padding_high.assign(padding_high.begin(), padding_high.end());
  return ffi::Error::Success();
}

enum Mode { kInference, kTraining, kBackward };

ffi::Error RunPool(Mode mode, const Pool& p, void* x, void* y, void* workspace) {
  try {
    std::lock_guard<std::mutex> lock(Mutex());
    PoolEntry* e = BuildPool(p);
    dnnl::engine& engine = Engine();
    dnnl::memory src(e->src, engine, x), dst(e->dst, engine, y);
    if (mode == kInference) {
      e->inference.execute(Stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
    } else if (mode == kTraining) {
      dnnl::memory ws(e->workspace, engine, workspace);
      e->training.execute(Stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst},
                                     {DNNL_ARG_WORKSPACE, ws}});
    } else {
      dnnl::memory ws(e->workspace, engine, workspace);
      e->backward.execute(Stream(), {{DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_DIFF_SRC, src},
                                     {DNNL_ARG_WORKSPACE, ws}});
    }
    Stream().wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN max pooling failed: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Inference(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                     ffi::Span<const int64_t> window, ffi::Span<const int64_t> strides,
                     ffi::Span<const int64_t> padding_low,
                     ffi::Span<const int64_t> padding_high) {
  Pool p;
  ffi::Error error = Describe(Shape(x), Shape(*y), x.element_type(), window, strides,
                              padding_low, padding_high, &p);
  if (error.failure()) return error;
  return RunPool(kInference, p, x.untyped_data(), y->untyped_data(), nullptr);
}

ffi::Error Training(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                    ffi::Result<ffi::AnyBuffer> workspace, ffi::Span<const int64_t> window,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding_low,
                    ffi::Span<const int64_t> padding_high) {
  Pool p;
  ffi::Error error = Describe(Shape(x), Shape(*y), x.element_type(), window, strides,
                              padding_low, padding_high, &p);
  if (error.failure()) return error;
  return RunPool(kTraining, p, x.untyped_data(), y->untyped_data(),
                 workspace->untyped_data());
}

ffi::Error Backward(ffi::AnyBuffer dy, ffi::AnyBuffer workspace, ffi::Result<ffi::AnyBuffer> dx,
                    ffi::Span<const int64_t> window, ffi::Span<const int64_t> strides,
                    ffi::Span<const int64_t> padding_low,
                    ffi::Span<const int64_t> padding_high) {
  Pool p;
  ffi::Error error = Describe(Shape(*dx), Shape(dy), dy.element_type(), window, strides,
                              padding_low, padding_high, &p);
  if (error.failure()) return error;
  return RunPool(kBackward, p, dx->untyped_data(), dy.untyped_data(),
                 workspace.untyped_data());
}

}  // namespace

#define CNNJAX_POOL_ATTRS                                     \
  .Attr<ffi::Span<const int64_t>>("window")                   \
      .Attr<ffi::Span<const int64_t>>("strides")              \
      .Attr<ffi::Span<const int64_t>>("padding_low")          \
      .Attr<ffi::Span<const int64_t>>("padding_high")

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlMaxPoolInference, Inference,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CNNJAX_POOL_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlMaxPoolTraining, Training,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CNNJAX_POOL_ATTRS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlMaxPoolBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CNNJAX_POOL_ATTRS);

// The workspace's size in bytes for one pooling (shapes as the handlers take
// them; n = x's rank; bf16 != 0 for bfloat16), or -1 where oneDNN refuses
// it. Python sizes the training handler's second result with it.
extern "C" int64_t cnnjax_dnnl_max_pool_workspace(const int64_t* x, const int64_t* y, int64_t n,
                                                  const int64_t* window, const int64_t* strides,
                                                  const int64_t* low, const int64_t* high,
                                                  int bf16) {
  Pool p;
  p.x.assign(x, x + n);
  p.y.assign(y, y + n);
  p.window.assign(window, window + n - 2);
  p.strides.assign(strides, strides + n - 2);
  p.padding_low.assign(low, low + n - 2);
  p.padding_high.assign(high, high + n - 2);
  p.type = bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  try {
    std::lock_guard<std::mutex> lock(Mutex());
    return static_cast<int64_t>(BuildPool(p)->workspace.get_size());
  } catch (const dnnl::error&) {
    return -1;
  }
}
