// C entry points that launch the real kernels of kernels/nms.cu and kernels/roi_align.cu on the CPU
// through shim.h (every block and every thread of the grid). Built by kernels/testing/cpu_harness.py
// (g++ -std=c++17 -O2 -ffp-contract=off -fPIC -shared -I include -include shim.h driver.cpp).
// Every function returns 0 on success and -1 on failure (message via det_last_error()).
#include "../nms.cu"
#include "../roi_align.cu"

#include <cstring>
#include <exception>

namespace {
thread_local std::string last_error;

template <class F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return -1;
  }
}
}  // namespace

extern "C" const char* det_last_error() { return last_error.c_str(); }

// boxes_sorted (float32[n, 4]) sorted by decreasing score; order (int64[n]); keep (int64[n]) out.
extern "C" int det_nms(const float* boxes_sorted, int n, float threshold, const long long* order,
                       long long* keep, int* num_keep, int gather_threads) {
  return guarded([&] {
    const int col_blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
    // poison the mask and the scratch: the kernels must never read words they did not write
    std::vector<nms_word_t> mask(std::size_t(n) * col_blocks, 0xA5A5A5A5A5A5A5A5ULL);
    std::vector<nms_word_t> removed(std::size_t(col_blocks) + 1, 0x5A5A5A5A5A5A5A5AULL);
    if (n > 0) {
      det_shim::launch(dim3(col_blocks, col_blocks), dim3(NMS_BLOCK),
                       [&] { nms_mask(boxes_sorted, n, threshold, mask.data()); });
    }
    det_shim::launch(dim3(1), dim3(gather_threads), [&] {
      nms_gather_keep(mask.data(), n, order, removed.data(), keep, num_keep);
    });
  });
}

// dtype: 0 float32, 1 float16 (input/output as raw 16-bit storage).
extern "C" int det_roi_align_forward(int dtype, const void* input, const float* rois, long long total,
                                     int channels, int height, int width, int pooled_h, int pooled_w,
                                     float spatial_scale, int sampling_ratio, int aligned, void* output,
                                     int grid, int block) {
  return guarded([&] {
    det_shim::launch(dim3(grid), dim3(block), [&] {
      if (dtype == 0) {
        roi_align_forward_f32(static_cast<const float*>(input), rois, total, channels, height, width,
                              pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned,
                              static_cast<float*>(output));
      } else {
        roi_align_forward_f16(static_cast<const __half*>(input), rois, total, channels, height, width,
                              pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned,
                              static_cast<__half*>(output));
      }
    });
  });
}

// grad_input (float32[N, C, H, W]) must be zero-initialised by the caller.
extern "C" int det_roi_align_backward(int dtype, const void* grad_output, const float* rois,
                                      long long total, int channels, int height, int width, int pooled_h,
                                      int pooled_w, float spatial_scale, int sampling_ratio, int aligned,
                                      float* grad_input, int grid, int block) {
  return guarded([&] {
    det_shim::launch(dim3(grid), dim3(block), [&] {
      if (dtype == 0) {
        roi_align_backward_f32(static_cast<const float*>(grad_output), rois, total, channels, height,
                               width, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned,
                               grad_input);
      } else {
        roi_align_backward_f16(static_cast<const __half*>(grad_output), rois, total, channels, height,
                               width, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned,
                               grad_input);
      }
    });
  });
}

// One launch of one kernel with the caller's grid and block, argument for argument as the CuPy backend
// passes them (lets tests run detcli.ops.cupy_backend's launch code against the real kernels).
extern "C" int det_launch_nms_mask(int grid_x, int grid_y, int block, const float* boxes, int n,
                                   float threshold, nms_word_t* mask) {
  return guarded([&] {
    det_shim::launch(dim3(grid_x, grid_y), dim3(block), [&] { nms_mask(boxes, n, threshold, mask); });
  });
}

extern "C" int det_launch_nms_gather_keep(int grid_x, int block, const nms_word_t* mask, int n,
                                          const long long* order, nms_word_t* removed, long long* keep,
                                          int* num_keep) {
  return guarded([&] {
    det_shim::launch(dim3(grid_x), dim3(block),
                     [&] { nms_gather_keep(mask, n, order, removed, keep, num_keep); });
  });
}

extern "C" int det_launch_nms_suppressed_by(int grid_x, int block, const float* kept, int num_kept,
                                            const float* boxes, int n, float threshold, int* suppressed) {
  return guarded([&] {
    det_shim::launch(dim3(grid_x), dim3(block),
                     [&] { nms_suppressed_by(kept, num_kept, boxes, n, threshold, suppressed); });
  });
}

#define DET_ROI_LAUNCHER(KERNEL, IN_T, OUT_T)                                                         \
  extern "C" int det_launch_##KERNEL(int grid_x, int block, const IN_T* in, const float* rois,        \
                                     long long total, int channels, int height, int width,            \
                                     int pooled_h, int pooled_w, float spatial_scale,                 \
                                     int sampling_ratio, int aligned, OUT_T* out) {                   \
    return guarded([&] {                                                                              \
      det_shim::launch(dim3(grid_x), dim3(block), [&] {                                               \
        KERNEL(in, rois, total, channels, height, width, pooled_h, pooled_w, spatial_scale,           \
               sampling_ratio, aligned, out);                                                         \
      });                                                                                             \
    });                                                                                               \
  }

DET_ROI_LAUNCHER(roi_align_forward_f32, float, float)
DET_ROI_LAUNCHER(roi_align_forward_f16, __half, __half)
DET_ROI_LAUNCHER(roi_align_backward_f32, float, float)
DET_ROI_LAUNCHER(roi_align_backward_f16, __half, float)
