// The interface between the torch binding (bindings.cpp) and the kernels (*.cu): plain structs and launcher
// declarations, no torch and no CUDA headers.  Launchers return an empty string on success, else the reason.
#pragma once

#include <cstdint>
#include <string>

namespace sgvis {

constexpr int kMaxStages = 4;

// Values of ChainStage::act.
enum : int { kActNone = 0, kActLrelu = 1 };

struct ChainStage {
    int up_x, up_y, down_x, down_y, pad_x, pad_y;  // pad: leading padding (negative crops)
    int k_w, k_h;                                  // taps: k_h rows of k_w
    int tap_off;                                   // offset of the taps in ChainParams::taps
    int act;                                       // kActLrelu: leaky ReLU * gain, clamp on this stage's output
};
constexpr int kStageInts = 10;  // ints per stage in the binding's flat list, in the order above

struct ChainParams {
    const void* x;     // [N, C, in_h, in_w], any strides
    const void* bias;  // [C] contiguous, same dtype as x, or null
    void* y;           // [N, C, out_h, out_w], any strides
    uint8_t* mask;     // [N, C, mid_h, mid_w] or null: per pixel of the activated level, 0 = negative
                       // slope, 1 = positive, 2 = clamped (gradient 0)
    const void* taps;  // all stages' taps, accumulation type, contiguous
    int num_taps;
    int N, C, in_h, in_w, out_h, out_w, mid_h, mid_w;
    int64_t sx[4], sy[4], sm[4];  // strides in elements (n, c, h, w)
    int num_stages;
    ChainStage st[kMaxStages];
    double gain, slope, clamp;  // leaky ReLU; clamp < 0: none
};

// Activation ids (the order of cuda_ops.bias_act.ACTIVATIONS is mapped to these in Python).
enum : int {
    kLinear = 0, kRelu = 1, kLrelu = 2, kTanh = 3, kSigmoid = 4, kElu = 5, kSelu = 6, kSoftplus = 7, kSwish = 8
};
// BiasActParams::mode.
enum : int { kForward = 0, kGrad = 1, kGradGrad = 2 };

struct BiasActParams {
    const void* x;   // n elements, dense; channel of element i = (i / inner) % C
    const void* b;   // [C] or null
    const void* g1;  // kGrad, kGradGrad: incoming gradient (same layout as x)
    const void* g2;  // kGradGrad: gradient of the first-order gradient
    void* y;
    int64_t n, inner;
    int C;
    int act, mode;
    double alpha, gain, clamp;  // clamp < 0: none
};

struct MaskMulParams {
    const void* g;
    const uint8_t* mask;
    void* y;
    int64_t shape[4], sg[4], sm[4], sy[4];
    double gain, slope;
};

// dtype: sgvis::DType (common.cuh): 0 float32, 1 float16, 2 bfloat16, 3 float64.  stream: cudaStream_t.
std::string upfirdn2d_launch(const ChainParams& p, int dtype, bool c_fastest, void* stream);
std::string filtered_lrelu_launch(const ChainParams& p, int dtype, bool c_fastest, void* stream);
std::string mask_mul_launch(const MaskMulParams& p, int dtype, void* stream);
std::string bias_act_launch(const BiasActParams& p, int dtype, void* stream);

}  // namespace sgvis
