// Minimal host stand-in for CUDA's <cuda_fp16.h>, used only by kernels/testing/shim.h builds:
// IEEE binary16 storage with round-to-nearest-even conversions (GCC/Clang _Float16).
#pragma once

struct __half {
  _Float16 value;
};

static_assert(sizeof(__half) == 2, "__half must be 2 bytes");

inline float __half2float(const __half h) { return static_cast<float>(h.value); }
inline __half __float2half(const float f) { return __half{static_cast<_Float16>(f)}; }
