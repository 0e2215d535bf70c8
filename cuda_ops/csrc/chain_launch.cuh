// The chain kernel and its launcher (CUDA only); included by upfirdn2d.cu (no activation) and
// filtered_lrelu.cu (with the fused leaky ReLU).  The per-block work is in chain.cuh.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "chain.cuh"

namespace sgvis {

template <typename T, typename A, bool HasAct>
__global__ void __launch_bounds__(kChainThreads) chain_kernel(ChainParams p, ChainPlan plan) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int phases = chain_num_phases(p);
    for (int n = blockIdx.z; n < p.N; n += gridDim.z) {
        for (int cb = blockIdx.y; cb < plan.cblocks; cb += gridDim.y) {
            for (int ph = 0; ph < phases; ++ph) {
                chain_phase<T, A, HasAct>(ph, p, plan, n, cb, blockIdx.x, threadIdx.x, smem);
                __syncthreads();
            }
        }
    }
}

template <typename T, typename A, bool HasAct>
std::string chain_launch_typed(const ChainParams& p, bool c_fastest, void* stream) {
    const ChainPlan plan = chain_plan(p, sizeof(A), c_fastest);
    if (!plan.ok) return plan.error;
    const dim3 grid(plan.grid[0], plan.grid[1], plan.grid[2]);
    chain_kernel<T, A, HasAct>
        <<<grid, plan.threads, plan.smem_bytes, static_cast<cudaStream_t>(stream)>>>(p, plan);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return std::string("kernel launch failed: ") + cudaGetErrorString(err);
    return "";
}

template <bool HasAct>
std::string chain_launch(const ChainParams& p, int dtype, bool c_fastest, void* stream) {
    switch (dtype) {
        case kFloat32: return chain_launch_typed<float, float, HasAct>(p, c_fastest, stream);
        case kFloat16: return chain_launch_typed<__half, float, HasAct>(p, c_fastest, stream);
        case kBFloat16: return chain_launch_typed<__nv_bfloat16, float, HasAct>(p, c_fastest, stream);
        case kFloat64: return chain_launch_typed<double, double, HasAct>(p, c_fastest, stream);
        default: return "unsupported dtype";
    }
}

}  // namespace sgvis
