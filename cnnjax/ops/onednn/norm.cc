// oneDNN batch normalization in training, optionally with the ReLU that
// follows it fused in, as XLA FFI handlers (compiled with conv.cc and
// pool.cc into one library; cnnjax/ops/onednn/norm.py calls them).
//
//   x, y, dy, dx    (..., C): every axis but the last is one (M, C) matrix,
//                   oneDNN's nc, so any rank normalizes over all but channels
//   scale, shift    (C,) float32; mean, var (C,): the batch's statistics,
//                   var the biased variance
//   workspace       with the ReLU, where the output was positive (oneDNN's
//                   format, cnnjax_dnnl_batch_norm_workspace bytes); else empty
// Two handlers: forward (x, scale, shift -> y, mean, var, workspace) and
// backward (x, dy, mean, var, scale, workspace -> dx, dscale, dshift), with
// the attributes epsilon and relu. float32 only.

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"

using namespace cnnjax_dnnl;

namespace {

using Flags = dnnl::normalization_flags;

struct NormEntry {
  dnnl::memory::desc data, channels, statistics, workspace;
  dnnl::batch_normalization_forward forward;
  dnnl::batch_normalization_backward backward;
};

NormEntry* BuildNorm(int64_t m, int64_t c, float epsilon, bool relu) {
  static std::map<std::vector<int64_t>, std::unique_ptr<NormEntry>> cache;
  int32_t bits;
  std::memcpy(&bits, &epsilon, sizeof(bits));
  std::vector<int64_t> key = {m, c, bits, relu};
  auto found = cache.find(key);
  if (found != cache.end()) return found->second.get();

  auto type = dnnl::memory::data_type::f32;
  dnnl::memory::desc data({m, c}, type, Tag::nc);
  Flags flags = Flags::use_scale | Flags::use_shift;
  if (relu) flags |= Flags::fuse_norm_relu;
  auto forward = dnnl::batch_normalization_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, data, data, epsilon, flags);
  auto backward = dnnl::batch_normalization_backward::primitive_desc(
      Engine(), dnnl::prop_kind::backward, data, data, data, epsilon, flags, forward);
  auto entry = std::make_unique<NormEntry>();
  entry->data = data;
  entry->channels = dnnl::memory::desc({c}, type, Tag::a);
  entry->statistics = forward.mean_desc();
  entry->workspace = forward.workspace_desc();
  entry->forward = dnnl::batch_normalization_forward(forward);
  entry->backward = dnnl::batch_normalization_backward(backward);
  NormEntry* result = entry.get();
  cache.emplace(std::move(key), std::move(entry));
  return result;
}

// (M, C) of an (..., C) buffer.
bool Matrix(const ffi::AnyBuffer& x, int64_t* m, int64_t* c) {
  auto dims = x.dimensions();
  if (dims.size() < 1 || x.element_type() != ffi::DataType::F32) return false;
  *c = dims.back();
  *m = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) *m *= dims[i];
  return *m > 0 && *c > 0;
}

ffi::Error Invalid() {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                    "oneDNN batch norm: float32 (..., C) activations and (C,) parameters");
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift,
                   ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> mean,
                   ffi::Result<ffi::AnyBuffer> var, ffi::Result<ffi::AnyBuffer> workspace,
                   float epsilon, bool relu) {
  int64_t m, c;
  if (!Matrix(x, &m, &c) || scale.element_count() != c || shift.element_count() != c) {
    return Invalid();
  }
  try {
    std::lock_guard<std::mutex> lock(Mutex());
    NormEntry* e = BuildNorm(m, c, epsilon, relu);
    dnnl::engine& engine = Engine();
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(e->data, engine, x.untyped_data())},
        {DNNL_ARG_DST, dnnl::memory(e->data, engine, y->untyped_data())},
        {DNNL_ARG_SCALE, dnnl::memory(e->channels, engine, scale.untyped_data())},
        {DNNL_ARG_SHIFT, dnnl::memory(e->channels, engine, shift.untyped_data())},
        {DNNL_ARG_MEAN, dnnl::memory(e->statistics, engine, mean->untyped_data())},
        {DNNL_ARG_VARIANCE, dnnl::memory(e->statistics, engine, var->untyped_data())}};
    if (relu) {
      args[DNNL_ARG_WORKSPACE] = dnnl::memory(e->workspace, engine, workspace->untyped_data());
    }
    e->forward.execute(Stream(), args);
    Stream().wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN batch norm failed: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                    ffi::AnyBuffer scale, ffi::AnyBuffer workspace,
                    ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dscale,
                    ffi::Result<ffi::AnyBuffer> dshift, float epsilon, bool relu) {
  int64_t m, c;
  if (!Matrix(x, &m, &c) || dy.element_count() != m * c || scale.element_count() != c) {
    return Invalid();
  }
  try {
    std::lock_guard<std::mutex> lock(Mutex());
    NormEntry* e = BuildNorm(m, c, epsilon, relu);
    dnnl::engine& engine = Engine();
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, dnnl::memory(e->data, engine, x.untyped_data())},
        {DNNL_ARG_DIFF_DST, dnnl::memory(e->data, engine, dy.untyped_data())},
        {DNNL_ARG_DIFF_SRC, dnnl::memory(e->data, engine, dx->untyped_data())},
        {DNNL_ARG_MEAN, dnnl::memory(e->statistics, engine, mean.untyped_data())},
        {DNNL_ARG_VARIANCE, dnnl::memory(e->statistics, engine, var.untyped_data())},
        {DNNL_ARG_SCALE, dnnl::memory(e->channels, engine, scale.untyped_data())},
        {DNNL_ARG_DIFF_SCALE, dnnl::memory(e->channels, engine, dscale->untyped_data())},
        {DNNL_ARG_DIFF_SHIFT, dnnl::memory(e->channels, engine, dshift->untyped_data())}};
    if (relu) {
      args[DNNL_ARG_WORKSPACE] = dnnl::memory(e->workspace, engine, workspace.untyped_data());
    }
    e->backward.execute(Stream(), args);
    Stream().wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN batch norm failed: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlBatchNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxDnnlBatchNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));

// The workspace's size in bytes for batch norm + ReLU over an (m, c)
// matrix (0 without the ReLU), or -1 where oneDNN refuses it.
extern "C" int64_t cnnjax_dnnl_batch_norm_workspace(int64_t m, int64_t c, float epsilon,
                                                    int relu) {
  if (!relu) return 0;
  try {
    std::lock_guard<std::mutex> lock(Mutex());
    return static_cast<int64_t>(BuildNorm(m, c, epsilon, true)->workspace.get_size());
  } catch (const dnnl::error&) {
    return -1;
  }
}
