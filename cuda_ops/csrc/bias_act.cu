// bias_act: fused bias + activation + gain + clamp, and its first and second derivatives (bias_act.cuh).
#include <cuda_runtime.h>

#include <string>

#include "bias_act.cuh"

namespace sgvis {

template <typename T, typename A>
__global__ void __launch_bounds__(256) bias_act_kernel(BiasActParams p) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.n; i += int64_t(blockDim.x) * gridDim.x)
        bias_act_element<T, A>(i, p);
}

template <typename T, typename A>
std::string bias_act_typed(const BiasActParams& p, void* stream) {
    if (p.n == 0) return "";
    const int threads = 256;
    const int64_t want = (p.n + threads - 1) / threads;
    const unsigned blocks = unsigned(want < (1 << 20) ? want : (1 << 20));
    bias_act_kernel<T, A><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return std::string("kernel launch failed: ") + cudaGetErrorString(err);
    return "";
}

std::string bias_act_launch(const BiasActParams& p, int dtype, void* stream) {
    switch (dtype) {
        case kFloat32: return bias_act_typed<float, float>(p, stream);
        case kFloat16: return bias_act_typed<__half, float>(p, stream);
        case kBFloat16: return bias_act_typed<__nv_bfloat16, float>(p, stream);
        case kFloat64: return bias_act_typed<double, double>(p, stream);
        default: return "unsupported dtype";
    }
}

}  // namespace sgvis
