// The packed runtime on a CUDA GPU: the weights of a loaded export (runtime_internal.h) copied to
// the device, and a forward pass over n tokens with a device-side KV cache, on the kernels of
// packed_cuda.h (ternary2, int2/int4), ops_cuda.h (norms, RoPE, attention, ...) and cuBLAS SGEMM
// for fp32 linears. PackedModel (runtime.h) uses it for Device::kCuda; nothing else needs to.
//
// Storage on the device: ternary2 and int2/int4 as in the file; ternary3 repacked losslessly as
// ternary2 (the same trits and scales); fp32 as fp32. Activations are fp32. Everything runs on
// one stream of GPU 0; Forward copies the logits back and waits for them.
//
// Agreement with the CPU runtime: the same math in the same layout; results differ by float
// summation order only (the int8 activation codes and scales are bit-identical).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/runtime_internal.h"

namespace qat::kernels::cuda {

// cudaGetDeviceCount, or 0 when it fails (no driver, no device).
int VisibleDeviceCount();

// Device memory owned by one object; freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  // Makes room for at least `bytes` (contents are lost when it grows).
  absl::Status Reserve(size_t bytes, const char* what);
  // Allocates exactly `bytes` and copies them from the host.
  absl::Status Upload(const void* host, size_t bytes, const char* what);
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A decoding stream's device state: the KV cache of every layer.
class GpuSession {
 public:
  GpuSession() = default;

 private:
  friend class GpuModel;
  std::vector<DeviceBuffer> k_cache, v_cache;  // per layer, capacity rows x kv_dim floats
  int64_t capacity = 0;                        // rows allocated per layer
};

class GpuModel {
 public:
  // Copies the weights to GPU 0.
  static absl::StatusOr<std::unique_ptr<GpuModel>> Create(const ModelWeights& weights);
  ~GpuModel();
  std::unique_ptr<GpuSession> NewSession() const;
  // Runs tokens (already checked against the vocabulary and max_seq_len) at positions
  // pos..pos+n-1 of `session` and returns their logits, n x vocab. On error the cache rows past
  // pos may have changed, which a later call at pos overwrites.
  absl::StatusOr<std::vector<float>> Forward(GpuSession& session, const int32_t* tokens, int64_t n,
                                             int64_t pos) const;

 private:
  GpuModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qat::kernels::cuda
