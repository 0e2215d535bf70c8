// filtered_lrelu: bias, upsampling FIR, leaky ReLU with gain and clamp, downsampling FIR in one pass
// (chain.cuh with the activation on the last up-filter stage), plus the mask-based gradient of the
// activation used by the backward pass.
#include "chain_launch.cuh"

namespace sgvis {

std::string filtered_lrelu_launch(const ChainParams& p, int dtype, bool c_fastest, void* stream) {
    return chain_launch<true>(p, dtype, c_fastest, stream);
}

template <typename T, typename A>
__global__ void mask_mul_kernel(MaskMulParams p, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
        mask_mul_element<T, A>(i, p);
}

template <typename T, typename A>
std::string mask_mul_typed(const MaskMulParams& p, void* stream) {
    const int64_t n = p.shape[0] * p.shape[1] * p.shape[2] * p.shape[3];
    if (n == 0) return "";
    const int threads = 256;
    const int64_t want = (n + threads - 1) / threads;
    const unsigned blocks = unsigned(want < (1 << 20) ? want : (1 << 20));
    mask_mul_kernel<T, A><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(p, n);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return std::string("kernel launch failed: ") + cudaGetErrorString(err);
    return "";
}

std::string mask_mul_launch(const MaskMulParams& p, int dtype, void* stream) {
    switch (dtype) {
        case kFloat32: return mask_mul_typed<float, float>(p, stream);
        case kFloat16: return mask_mul_typed<__half, float>(p, stream);
        case kBFloat16: return mask_mul_typed<__nv_bfloat16, float>(p, stream);
        case kFloat64: return mask_mul_typed<double, double>(p, stream);
        default: return "unsupported dtype";
    }
}

}  // namespace sgvis
