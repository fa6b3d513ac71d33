// What the oneDNN kernels of cnnjax share (conv.cc, pool.cc): one CPU
// engine and stream for the process, one mutex that serializes the calls
// (oneDNN uses every core for each one and the primitive caches are plain
// maps), and the small conversions between XLA FFI buffers and oneDNN.

#ifndef CNNJAX_OPS_ONEDNN_COMMON_H_
#define CNNJAX_OPS_ONEDNN_COMMON_H_

#include <cstdint>
#include <mutex>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace cnnjax_dnnl {

namespace ffi = xla::ffi;
using Dims = dnnl::memory::dims;
using Tag = dnnl::memory::format_tag;

// Inline functions with static locals: one engine, stream and mutex for the
// whole library, whichever file calls them.
inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

inline dnnl::stream& Stream() {
  static dnnl::stream stream(Engine());
  return stream;
}

inline std::mutex& Mutex() {
  static std::mutex mutex;
  return mutex;
}

// Channels-last activations with 1 to 3 spatial dims.
inline Tag ActivationTag(size_t spatial) {
  return spatial == 1 ? Tag::nwc : spatial == 2 ? Tag::nhwc : Tag::ndhwc;
}

// (N, *spatial, C) as oneDNN's logical (N, C, *spatial).
inline Dims ActivationDims(const std::vector<int64_t>& shape) {
  Dims dims = {shape.front(), shape.back()};
  dims.insert(dims.end(), shape.begin() + 1, shape.end() - 1);
  return dims;
}

inline std::vector<int64_t> Shape(const ffi::AnyBuffer& buffer) {
  auto dims = buffer.dimensions();
  return std::vector<int64_t>(dims.begin(), dims.end());
}

inline dnnl::memory::data_type Type(ffi::DataType type) {
  switch (type) {
    case ffi::DataType::F32: return dnnl::memory::data_type::f32;
    case ffi::DataType::BF16: return dnnl::memory::data_type::bf16;
    default: return dnnl::memory::data_type::undef;
  }
}

}  // namespace cnnjax_dnnl

#endif  // CNNJAX_OPS_ONEDNN_COMMON_H_
