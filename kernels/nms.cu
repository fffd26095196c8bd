// Bitmask non-maximum suppression with torchvision's semantics.
//
// IoU has no +1 (mmdet 2.x / torchvision) and box j is suppressed by a kept box i when IoU > threshold.
// The caller sorts the boxes by decreasing score with a STABLE sort and passes, as `threshold`, the
// largest float32 that is <= the requested (double) threshold: for a float32 IoU x, `x > that float`
// is then exactly `(double)x > threshold`, the comparison torchvision's CPU kernel makes.
//
// Two launches, both on the same stream:
//
// 1. nms_mask(boxes, n, threshold, mask)
//      grid (col_blocks, col_blocks), block NMS_BLOCK (64) threads, col_blocks = ceil(n / 64).
//      Block (x, y) loads the 64 boxes of column block x into shared memory; thread t then compares box
//      i = 64 * y + t with every later box j of that column block and writes one 64-bit word:
//      bit k of mask[i * col_blocks + x] is set when j = 64 * x + k > i and IoU(i, j) > threshold.
//      Blocks below the diagonal (x < y) return at once: the reduction never reads those words.
//
// 2. nms_gather_keep(mask, n, order, removed, keep, num_keep)
//      grid 1, any block size (256 is a good choice). The greedy walk over the mask, on the GPU.
//      Thread t owns the "removed" words w with w % blockDim.x == t (a scratch buffer of col_blocks
//      words, initialised here). For each 64-box block b in score order, the owner of word b resolves
//      the suppression inside the block sequentially and publishes the 64-bit set of kept boxes through
//      shared memory (double-buffered, so one barrier per block is enough); then every thread ORs the
//      rows of those kept boxes into the later words it owns, and thread 0 appends the kept boxes'
//      original indices order[i] to `keep` in score order. num_keep[0] receives their count.
//
// The bitmask takes n * ceil(n / 64) words (n^2 / 8 bytes). Larger inputs go through in chunks of
// sorted boxes (detcli/ops/cupy_backend.py), which keeps the bitmask at chunk^2 / 8 bytes with the
// same keep list: the boxes of a chunk that a box kept from an earlier chunk suppresses are dropped
// first (a suppressed box never suppresses anything in greedy NMS), then launches 1 and 2 run on the
// rest of the chunk.
//
// 3. nms_suppressed_by(kept, num_kept, boxes, n, threshold, suppressed)
//      grid ceil(n / 64), block NMS_BLOCK (64) threads. Thread t of block x owns box j = 64 * x + t and
//      sets suppressed[j] = 1 when IoU(kept[i], boxes[j]) > threshold for some i < num_kept (it never
//      clears a flag: the caller zero-initialises `suppressed`). The kept boxes pass through shared
//      memory 64 at a time.

#define NMS_BLOCK 64

typedef unsigned long long nms_word_t;

// Same operation order as torchvision's CPU kernel, so every decision is bit-identical.
__device__ __forceinline__ bool nms_iou_above(const float* a, const float* b, float threshold) {
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  const float w = fmaxf(0.0f, fminf(a[2], b[2]) - fmaxf(a[0], b[0]));
  const float h = fmaxf(0.0f, fminf(a[3], b[3]) - fmaxf(a[1], b[1]));
  const float inter = w * h;
  return inter / (area_a + area_b - inter) > threshold;
}

// boxes (float32[n, 4]): (x1, y1, x2, y2) sorted by decreasing score.
// mask (uint64[n, col_blocks]): written above and on the diagonal only.
extern "C" __global__ void nms_mask(const float* __restrict__ boxes, const int n, const float threshold,
                                    nms_word_t* __restrict__ mask) {
  const int row_block = blockIdx.y;
  const int col_block = blockIdx.x;
  if (col_block < row_block) {
    return;  // whole block leaves together: no barrier is skipped by part of it
  }
  const int col_blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
  const int col_start = col_block * NMS_BLOCK;
  const int col_size = min(n - col_start, NMS_BLOCK);
  const int row_size = min(n - row_block * NMS_BLOCK, NMS_BLOCK);

  __shared__ float col_boxes[NMS_BLOCK * 4];
  const int t = threadIdx.x;
  if (t < col_size) {
    for (int c = 0; c < 4; ++c) {
      col_boxes[t * 4 + c] = boxes[(col_start + t) * 4 + c];
    }
  }
  __syncthreads();

  if (t < row_size) {
    const int row = row_block * NMS_BLOCK + t;
    const float* cur = boxes + row * 4;
    nms_word_t bits = 0;
    const int start = (row_block == col_block) ? t + 1 : 0;
    for (int k = start; k < col_size; ++k) {
      if (nms_iou_above(cur, col_boxes + k * 4, threshold)) {
        bits |= 1ULL << k;
      }
    }
    mask[(long long)row * col_blocks + col_block] = bits;
  }
}

// mask (uint64[n, col_blocks]) from nms_mask; order (int64[n]): original index of the i-th sorted box;
// removed (uint64[col_blocks]): scratch; keep (int64[n]): out, first num_keep[0] entries are valid.
extern "C" __global__ void nms_gather_keep(const nms_word_t* __restrict__ mask, const int n,
                                           const long long* __restrict__ order,
                                           nms_word_t* __restrict__ removed, long long* __restrict__ keep,
                                           int* __restrict__ num_keep) {
  const int col_blocks = (n + NMS_BLOCK - 1) / NMS_BLOCK;
  const int t = threadIdx.x;
  const int num_threads = blockDim.x;
  __shared__ nms_word_t kept_bits[2];
  int count = 0;  // meaningful in thread 0 only

  for (int w = t; w < col_blocks; w += num_threads) {
    removed[w] = 0;  // only the owner ever touches word w
  }

  for (int b = 0; b < col_blocks; ++b) {
    const int start = b * NMS_BLOCK;
    const int size = min(n - start, NMS_BLOCK);
    if (b % num_threads == t) {
      // resolve the greedy order inside block b
      nms_word_t word = removed[b];
      nms_word_t kept = 0;
      for (int k = 0; k < size; ++k) {
        if (!((word >> k) & 1ULL)) {
          kept |= 1ULL << k;
          word |= mask[(long long)(start + k) * col_blocks + b];
        }
      }
      kept_bits[b & 1] = kept;
    }
    __syncthreads();
    const nms_word_t kept = kept_bits[b & 1];

    // later words: OR in the rows of the boxes kept in block b
    int first = t;
    if (first <= b) {
      first += ((b - t) / num_threads + 1) * num_threads;
    }
    for (int w = first; w < col_blocks; w += num_threads) {
      nms_word_t acc = removed[w];
      for (int k = 0; k < size; ++k) {
        if ((kept >> k) & 1ULL) {
          acc |= mask[(long long)(start + k) * col_blocks + w];
        }
      }
      removed[w] = acc;
    }
    if (t == 0) {
      for (int k = 0; k < size; ++k) {
        if ((kept >> k) & 1ULL) {
          keep[count++] = order[start + k];
        }
      }
    }
  }
  if (t == 0) {
    num_keep[0] = count;
  }
}

// kept (float32[num_kept, 4]): boxes kept so far (all score higher than `boxes`); boxes (float32[n, 4]);
// suppressed (int32[n]): set to 1 for each box that a kept box suppresses, untouched otherwise.
extern "C" __global__ void nms_suppressed_by(const float* __restrict__ kept, const int num_kept,
                                             const float* __restrict__ boxes, const int n,
                                             const float threshold, int* __restrict__ suppressed) {
  __shared__ float kept_tile[NMS_BLOCK * 4];
  const int t = threadIdx.x;
  const long long j = (long long)blockIdx.x * NMS_BLOCK + t;
  float box[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (j < n) {
    for (int c = 0; c < 4; ++c) {
      box[c] = boxes[j * 4 + c];
    }
  }
  bool hit = false;
  for (int start = 0; start < num_kept; start += NMS_BLOCK) {
    const int size = min(num_kept - start, NMS_BLOCK);
    __syncthreads();  // every thread is done with the previous tile
    if (t < size) {
      for (int c = 0; c < 4; ++c) {
        kept_tile[t * 4 + c] = kept[((long long)start + t) * 4 + c];
      }
    }
    __syncthreads();
    if (j < n && !hit) {
      for (int k = 0; k < size; ++k) {
        if (nms_iou_above(kept_tile + k * 4, box, threshold)) {
          hit = true;
          break;
        }
      }
    }
  }
  if (j < n && hit) {
    suppressed[j] = 1;
  }
}
