// RoIAlign forward and backward with torchvision's semantics (float32 and float16 feature maps).
//
// input (T[N, C, H, W]) contiguous; rois (float32[K, 5]) contiguous rows (batch_index, x1, y1, x2, y2)
// in image pixels; output (T[K, C, PH, PW]). Every output bin averages roi_bin_grid_h * roi_bin_grid_w
// bilinear samples; sampling_ratio > 0 fixes that grid, 0 picks ceil(roi_size / output_size) per RoI.
// aligned != 0 shifts the RoI by -0.5 pixel (sample points on pixel centres); aligned == 0 is the
// legacy mode, where the RoI size is clamped to at least one pixel. A sample with y < -1, y > H,
// x < -1 or x > W contributes zero; otherwise coordinates are clamped into the map as torchvision
// does. Arithmetic is float32 for both storage types (float16 is only loaded and stored).
//
// Launch: any 1-D grid and block; both kernels are grid-stride loops over the output elements.
//   roi_align_forward_f32 / _f16   (input, rois, total, C, H, W, PH, PW, spatial_scale, sampling_ratio,
//                                   aligned, output), total = K * C * PH * PW.
//   roi_align_backward_f32         (grad_output, rois, total, C, H, W, PH, PW, spatial_scale,
//                                   sampling_ratio, aligned, grad_input): grad_output is float32[K, C, PH,
//                                   PW] contiguous, grad_input float32[N, C, H, W] zero-initialised and
//                                   accumulated with atomicAdd (the caller casts it for float16 inputs).
//   roi_align_backward_f16         same with a float16 grad_output; grad_input is still float32.

#include <cuda_fp16.h>

__device__ __forceinline__ float roi_load(const float* p) { return *p; }
__device__ __forceinline__ float roi_load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void roi_store(float* p, const float v) { *p = v; }
__device__ __forceinline__ void roi_store(__half* p, const float v) { *p = __float2half(v); }

// Where the bins of one RoI lie on the feature map.
struct RoiBins {
  int batch;
  float start_h;
  float start_w;
  float bin_h;
  float bin_w;
  int grid_h;
  int grid_w;
  float count;
};

__device__ __forceinline__ RoiBins roi_bins(const float* roi, const int pooled_h, const int pooled_w,
                                            const float spatial_scale, const int sampling_ratio,
                                            const int aligned) {
  RoiBins r;
  r.batch = (int)roi[0];
  const float offset = aligned ? 0.5f : 0.0f;
  r.start_w = roi[1] * spatial_scale - offset;
  r.start_h = roi[2] * spatial_scale - offset;
  const float end_w = roi[3] * spatial_scale - offset;
  const float end_h = roi[4] * spatial_scale - offset;
  float roi_w = end_w - r.start_w;
  float roi_h = end_h - r.start_h;
  if (!aligned) {
    // legacy mode: force malformed RoIs to be at least 1x1
    roi_w = fmaxf(roi_w, 1.0f);
    roi_h = fmaxf(roi_h, 1.0f);
  }
  r.bin_h = roi_h / (float)pooled_h;
  r.bin_w = roi_w / (float)pooled_w;
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(roi_h / (float)pooled_h);
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(roi_w / (float)pooled_w);
  r.count = (float)max(r.grid_h * r.grid_w, 1);
  return r;
}

// Bilinear weights and the four neighbours of sample (y, x); false when the sample lies outside.
struct Bilinear {
  int y_low;
  int x_low;
  int y_high;
  int x_high;
  float w1;
  float w2;
  float w3;
  float w4;
};

__device__ __forceinline__ bool roi_bilinear(const int height, const int width, float y, float x,
                                             Bilinear* out) {
  if (y < -1.0f || y > (float)height || x < -1.0f || x > (float)width) {
    return false;
  }
  if (y <= 0.0f) y = 0.0f;
  if (x <= 0.0f) x = 0.0f;
  int y_low = (int)y;
  int x_low = (int)x;
  int y_high;
  int x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = (float)y_low;
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = (float)x_low;
  } else {
    x_high = x_low + 1;
  }
  const float ly = y - (float)y_low;
  const float lx = x - (float)x_low;
  const float hy = 1.0f - ly;
  const float hx = 1.0f - lx;
  out->y_low = y_low;
  out->x_low = x_low;
  out->y_high = y_high;
  out->x_high = x_high;
  out->w1 = hy * hx;
  out->w2 = hy * lx;
  out->w3 = ly * hx;
  out->w4 = ly * lx;
  return true;
}

template <typename T>
__device__ void roi_align_forward_impl(const T* __restrict__ input, const float* __restrict__ rois,
                                       const long long total, const int channels, const int height,
                                       const int width, const int pooled_h, const int pooled_w,
                                       const float spatial_scale, const int sampling_ratio,
                                       const int aligned, T* __restrict__ output) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total;
       index += stride) {
    const int pw = (int)(index % pooled_w);
    const int ph = (int)((index / pooled_w) % pooled_h);
    const int c = (int)((index / pooled_w / pooled_h) % channels);
    const long long n = index / pooled_w / pooled_h / channels;
    const RoiBins r = roi_bins(rois + n * 5, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned);
    const T* plane = input + ((long long)r.batch * channels + c) * height * width;

    float sum = 0.0f;
    for (int iy = 0; iy < r.grid_h; ++iy) {
      const float y = r.start_h + (float)ph * r.bin_h + ((float)iy + 0.5f) * r.bin_h / (float)r.grid_h;
      for (int ix = 0; ix < r.grid_w; ++ix) {
        const float x = r.start_w + (float)pw * r.bin_w + ((float)ix + 0.5f) * r.bin_w / (float)r.grid_w;
        Bilinear b;
        if (roi_bilinear(height, width, y, x, &b)) {
          sum += b.w1 * roi_load(plane + b.y_low * width + b.x_low) +
                 b.w2 * roi_load(plane + b.y_low * width + b.x_high) +
                 b.w3 * roi_load(plane + b.y_high * width + b.x_low) +
                 b.w4 * roi_load(plane + b.y_high * width + b.x_high);
        }
      }
    }
    roi_store(output + index, sum / r.count);
  }
}

template <typename T>
__device__ void roi_align_backward_impl(const T* __restrict__ grad_output, const float* __restrict__ rois,
                                        const long long total, const int channels, const int height,
                                        const int width, const int pooled_h, const int pooled_w,
                                        const float spatial_scale, const int sampling_ratio,
                                        const int aligned, float* __restrict__ grad_input) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total;
       index += stride) {
    const int pw = (int)(index % pooled_w);
    const int ph = (int)((index / pooled_w) % pooled_h);
    const int c = (int)((index / pooled_w / pooled_h) % channels);
    const long long n = index / pooled_w / pooled_h / channels;
    const RoiBins r = roi_bins(rois + n * 5, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned);
    float* plane = grad_input + ((long long)r.batch * channels + c) * height * width;
    const float grad = roi_load(grad_output + index);

    for (int iy = 0; iy < r.grid_h; ++iy) {
      const float y = r.start_h + (float)ph * r.bin_h + ((float)iy + 0.5f) * r.bin_h / (float)r.grid_h;
      for (int ix = 0; ix < r.grid_w; ++ix) {
        const float x = r.start_w + (float)pw * r.bin_w + ((float)ix + 0.5f) * r.bin_w / (float)r.grid_w;
        Bilinear b;
        if (roi_bilinear(height, width, y, x, &b)) {
          atomicAdd(plane + b.y_low * width + b.x_low, grad * b.w1 / r.count);
          atomicAdd(plane + b.y_low * width + b.x_high, grad * b.w2 / r.count);
          atomicAdd(plane + b.y_high * width + b.x_low, grad * b.w3 / r.count);
          atomicAdd(plane + b.y_high * width + b.x_high, grad * b.w4 / r.count);
        }
      }
    }
  }
}

extern "C" __global__ void roi_align_forward_f32(const float* input, const float* rois, long long total,
                                                 int channels, int height, int width, int pooled_h,
                                                 int pooled_w, float spatial_scale, int sampling_ratio,
                                                 int aligned, float* output) {
  roi_align_forward_impl<float>(input, rois, total, channels, height, width, pooled_h, pooled_w,
                                spatial_scale, sampling_ratio, aligned, output);
}

extern "C" __global__ void roi_align_forward_f16(const __half* input, const float* rois, long long total,
                                                 int channels, int height, int width, int pooled_h,
                                                 int pooled_w, float spatial_scale, int sampling_ratio,
                                                 int aligned, __half* output) {
  roi_align_forward_impl<__half>(input, rois, total, channels, height, width, pooled_h, pooled_w,
                                 spatial_scale, sampling_ratio, aligned, output);
}

extern "C" __global__ void roi_align_backward_f32(const float* grad_output, const float* rois,
                                                  long long total, int channels, int height, int width,
                                                  int pooled_h, int pooled_w, float spatial_scale,
                                                  int sampling_ratio, int aligned, float* grad_input) {
  roi_align_backward_impl<float>(grad_output, rois, total, channels, height, width, pooled_h, pooled_w,
                                 spatial_scale, sampling_ratio, aligned, grad_input);
}

extern "C" __global__ void roi_align_backward_f16(const __half* grad_output, const float* rois,
                                                  long long total, int channels, int height, int width,
                                                  int pooled_h, int pooled_w, float spatial_scale,
                                                  int sampling_ratio, int aligned, float* grad_input) {
  roi_align_backward_impl<__half>(grad_output, rois, total, channels, height, width, pooled_h, pooled_w,
                                  spatial_scale, sampling_ratio, aligned, grad_input);
}
