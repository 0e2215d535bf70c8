// Thin torch binding for the sgvis CUDA kernels: checks tensors, fills the plain parameter structs of
// ops.h and calls the launchers on the tensor's device and current stream.  Shapes, paddings, tap
// orientation and output allocation are decided in Python (cuda_ops/_kernels.py).
//
// Only CPU-side torch headers are used: the device guard and the current stream come through c10's
// device-independent interfaces, so this file needs neither CUDA headers nor libc10_cuda symbols.  The
// tensor and pybind11 headers are included directly rather than torch/extension.h (which pulls in all of
// the C++ frontend): a quarter of the compile time.
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <optional>
#include <string>
#include <vector>

#include "ops.h"

namespace {

constexpr int kAbiVersion = 1;  // bump when the Python-facing signatures change

int dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return 0;
        case at::kHalf: return 1;
        case at::kBFloat16: return 2;
        case at::kDouble: return 3;
        default: TORCH_CHECK(false, "sgvis cuda_ops: unsupported dtype ", t, " (float32, float16, bfloat16, float64)");
    }
    return -1;
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void* current_stream(const at::Tensor& t) {
    c10::impl::VirtualGuardImpl impl(t.device().type());
    return impl.getStream(t.device()).native_handle();
}

void check_cuda(const at::Tensor& t, const at::Tensor& ref, const char* name) {
    TORCH_CHECK(t.is_cuda(), "sgvis cuda_ops: ", name, " must be a CUDA tensor, got device ", t.device());
    TORCH_CHECK(t.device() == ref.device(), "sgvis cuda_ops: ", name, " is on ", t.device(), ", expected ",
                ref.device());
}

void check_int32(const at::Tensor& t, const char* name) {
    for (int64_t d = 0; d < t.dim(); ++d)
        TORCH_CHECK(t.size(d) < (int64_t(1) << 31), "sgvis cuda_ops: ", name, " dimension ", d, " too large");
}

void chain(const at::Tensor& x, const std::optional<at::Tensor>& bias, const at::Tensor& taps, const at::Tensor& y,
           const std::optional<at::Tensor>& mask, const std::vector<int64_t>& stages, double gain, double slope,
           double clamp, bool act) {
    check_cuda(x, x, "x");
    check_cuda(y, x, "y");
    check_cuda(taps, x, "taps");
    TORCH_CHECK(x.dim() == 4 && y.dim() == 4, "sgvis cuda_ops: x and y must be 4-D [N, C, H, W]");
    TORCH_CHECK(y.scalar_type() == x.scalar_type(), "sgvis cuda_ops: y dtype differs from x");
    TORCH_CHECK(y.size(0) == x.size(0) && y.size(1) == x.size(1), "sgvis cuda_ops: y batch/channels differ from x");
    TORCH_CHECK(taps.dim() == 1 && taps.is_contiguous() && taps.scalar_type() == acc_type(x.scalar_type()),
                "sgvis cuda_ops: taps must be a contiguous 1-D tensor of the accumulation dtype");
    TORCH_CHECK(stages.size() % sgvis::kStageInts == 0 && !stages.empty() &&
                    stages.size() / sgvis::kStageInts <= size_t(sgvis::kMaxStages),
                "sgvis cuda_ops: bad stage list");
    check_int32(x, "x");
    check_int32(y, "y");
    const int dtype = dtype_code(x.scalar_type());

    sgvis::ChainParams p = {};
    p.x = x.data_ptr();
    p.y = y.data_ptr();
    p.taps = taps.data_ptr();
    p.num_taps = int(taps.numel());
    p.N = int(x.size(0));
    p.C = int(x.size(1));
    p.in_h = int(x.size(2));
    p.in_w = int(x.size(3));
    p.out_h = int(y.size(2));
    p.out_w = int(y.size(3));
    for (int d = 0; d < 4; ++d) {
        p.sx[d] = x.stride(d);
        p.sy[d] = y.stride(d);
    }
    if (bias.has_value() && bias->defined()) {
        check_cuda(*bias, x, "bias");
        TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(1) && bias->is_contiguous() &&
                        bias->scalar_type() == x.scalar_type(),
                    "sgvis cuda_ops: bias must be a contiguous [C] tensor of x's dtype");
        p.bias = bias->data_ptr();
    }
    if (mask.has_value() && mask->defined()) {
        check_cuda(*mask, x, "mask");
        TORCH_CHECK(mask->dim() == 4 && mask->scalar_type() == at::kByte && mask->size(0) == x.size(0) &&
                        mask->size(1) == x.size(1),
                    "sgvis cuda_ops: mask must be uint8 [N, C, H, W]");
        check_int32(*mask, "mask");
        p.mask = mask->data_ptr<uint8_t>();
        p.mid_h = int(mask->size(2));
        p.mid_w = int(mask->size(3));
        for (int d = 0; d < 4; ++d) p.sm[d] = mask->stride(d);
    }
    p.num_stages = int(stages.size() / sgvis::kStageInts);
    for (int s = 0; s < p.num_stages; ++s) {
        const int64_t* v = stages.data() + s * sgvis::kStageInts;
        sgvis::ChainStage& st = p.st[s];
        st.up_x = int(v[0]);
        st.up_y = int(v[1]);
        st.down_x = int(v[2]);
        st.down_y = int(v[3]);
        st.pad_x = int(v[4]);
        st.pad_y = int(v[5]);
        st.k_w = int(v[6]);
        st.k_h = int(v[7]);
        st.tap_off = int(v[8]);
        st.act = int(v[9]);
    }
    p.gain = gain;
    p.slope = slope;
    p.clamp = clamp;
    const bool c_fastest = x.size(1) > 1 && x.stride(1) == 1 && y.stride(1) == 1;
    if (x.numel() == 0 || y.numel() == 0) return;

    const c10::DeviceGuard guard(x.device());
    const std::string err = act ? sgvis::filtered_lrelu_launch(p, dtype, c_fastest, current_stream(x))
                                : sgvis::upfirdn2d_launch(p, dtype, c_fastest, current_stream(x));
    TORCH_CHECK(err.empty(), "sgvis cuda_ops: ", act ? "filtered_lrelu" : "upfirdn2d", ": ", err);
}

void bias_act(const at::Tensor& x, const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& g1,
              const std::optional<at::Tensor>& g2, const at::Tensor& y, int64_t mode, int64_t act, double alpha,
              double gain, double clamp, int64_t inner, int64_t channels) {
    check_cuda(x, x, "x");
    check_cuda(y, x, "y");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "sgvis cuda_ops: bias_act input must be dense");
    TORCH_CHECK(y.scalar_type() == x.scalar_type() && y.sizes() == x.sizes() && y.strides() == x.strides(),
                "sgvis cuda_ops: bias_act output must match the input's dtype, shape and strides");
    const int dtype = dtype_code(x.scalar_type());
    sgvis::BiasActParams p = {};
    p.x = x.data_ptr();
    p.y = y.data_ptr();
    p.n = x.numel();
    p.inner = inner < 1 ? 1 : inner;
    p.C = int(channels < 1 ? 1 : channels);
    if (b.has_value() && b->defined()) {
        check_cuda(*b, x, "b");
        TORCH_CHECK(b->dim() == 1 && b->size(0) == channels && b->is_contiguous() &&
                        b->scalar_type() == x.scalar_type(),
                    "sgvis cuda_ops: bias must be a contiguous [C] tensor of x's dtype");
        TORCH_CHECK(channels < (int64_t(1) << 31), "sgvis cuda_ops: too many channels");
        p.b = b->data_ptr();
    }
    const std::optional<at::Tensor>* grads[2] = {&g1, &g2};
    const void** slots[2] = {&p.g1, &p.g2};
    for (int k = 0; k < 2; ++k) {
        if (mode > k) {
            const auto& g = *grads[k];
            TORCH_CHECK(g.has_value() && g->defined(), "sgvis cuda_ops: bias_act gradient input missing");
            check_cuda(*g, x, "grad");
            TORCH_CHECK(g->scalar_type() == x.scalar_type() && g->sizes() == x.sizes() && g->strides() == x.strides(),
                        "sgvis cuda_ops: bias_act gradients must match the input's dtype, shape and strides");
            *slots[k] = g->data_ptr();
        }
    }
    TORCH_CHECK(mode >= 0 && mode <= 2, "sgvis cuda_ops: bad bias_act mode");
    p.act = int(act);
    p.mode = int(mode);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    if (p.n == 0) return;
    const c10::DeviceGuard guard(x.device());
    const std::string err = sgvis::bias_act_launch(p, dtype, current_stream(x));
    TORCH_CHECK(err.empty(), "sgvis cuda_ops: bias_act: ", err);
}

void mask_mul(const at::Tensor& g, const at::Tensor& mask, const at::Tensor& y, double gain, double slope) {
    check_cuda(g, g, "grad");
    check_cuda(mask, g, "mask");
    check_cuda(y, g, "y");
    TORCH_CHECK(g.dim() == 4 && mask.sizes() == g.sizes() && y.sizes() == g.sizes() &&
                    mask.scalar_type() == at::kByte && y.scalar_type() == g.scalar_type(),
                "sgvis cuda_ops: mask_mul shapes or dtypes disagree");
    const int dtype = dtype_code(g.scalar_type());
    sgvis::MaskMulParams p = {};
    p.g = g.data_ptr();
    p.mask = mask.data_ptr<uint8_t>();
    p.y = y.data_ptr();
    for (int d = 0; d < 4; ++d) {
        p.shape[d] = g.size(d);
        p.sg[d] = g.stride(d);
        p.sm[d] = mask.stride(d);
        p.sy[d] = y.stride(d);
    }
    p.gain = gain;
    p.slope = slope;
    if (g.numel() == 0) return;
    const c10::DeviceGuard guard(g.device());
    const std::string err = sgvis::mask_mul_launch(p, dtype, current_stream(g));
    TORCH_CHECK(err.empty(), "sgvis cuda_ops: filtered_lrelu backward: ", err);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "sgvis CUDA kernels: upfirdn2d, bias_act, filtered_lrelu (see cuda_ops/_kernels.py)";
    m.attr("abi_version") = kAbiVersion;
    m.def("chain", &chain, "upfirdn2d / filtered_lrelu stage chain", py::arg("x"), py::arg("bias"), py::arg("taps"),
          py::arg("y"), py::arg("mask"), py::arg("stages"), py::arg("gain"), py::arg("slope"), py::arg("clamp"),
          py::arg("act"));
    m.def("bias_act", &bias_act, "bias + activation (+ first / second derivative)", py::arg("x"), py::arg("b"),
          py::arg("g1"), py::arg("g2"), py::arg("y"), py::arg("mode"), py::arg("act"), py::arg("alpha"),
          py::arg("gain"), py::arg("clamp"), py::arg("inner"), py::arg("channels"));
    m.def("mask_mul", &mask_mul, "filtered_lrelu activation gradient from the saved mask", py::arg("g"),
          py::arg("mask"), py::arg("y"), py::arg("gain"), py::arg("slope"));
}
