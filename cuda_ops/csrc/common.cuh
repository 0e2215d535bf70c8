// sgvis CUDA ops: helpers shared by every kernel.
//
// These headers are deliberately free of torch and of CUDA-only constructs outside the kernel wrappers, so
// that (a) a plain `nvcc -c` of the .cu files compiles (the CI check) and (b) the very same per-block code
// can be compiled by a host C++ compiler and run block by block, thread by thread, on the CPU (the emulator
// in tests/cuda_emulator.cpp).  Per-block work is written as "phases": a phase function runs for one
// thread id; the kernel calls the phases in order with __syncthreads() between them, the emulator calls
// each phase for every thread id before moving to the next phase.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(__CUDACC__)
#define SGVIS_HD __host__ __device__ __forceinline__
#else
#define SGVIS_HD inline
#endif

// Bounds checks that only exist in the CPU emulator (SGVIS_EMULATE): they report the failing condition and
// leave the phase, so a wrong index shows up as a test failure instead of a silent wrong read.
#if defined(SGVIS_EMULATE)
void sgvis_emu_fail(const char* cond, const char* file, int line);
#define SGVIS_ASSERT(cond)                              \
    do {                                                \
        if (!(cond)) {                                  \
            sgvis_emu_fail(#cond, __FILE__, __LINE__);  \
            return;                                     \
        }                                               \
    } while (0)
#else
#define SGVIS_ASSERT(cond) \
    do {                   \
    } while (0)
#endif

namespace sgvis {

// Element types the kernels are instantiated for; the numbers are part of the binding's interface.
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Accumulation type: float for the 16/32-bit types, double for double.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename A, typename T> SGVIS_HD A to_acc(T v) { return static_cast<A>(v); }
template <> SGVIS_HD float to_acc<float, __half>(__half v) { return __half2float(v); }
template <> SGVIS_HD float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename A> SGVIS_HD T from_acc(A v) { return static_cast<T>(v); }
template <> SGVIS_HD __half from_acc<__half, float>(float v) { return __float2half_rn(v); }
template <> SGVIS_HD __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }

// Math in the accumulation type (float overloads on purpose: no silent promotion to double).
SGVIS_HD float m_exp(float v) { return expf(v); }
SGVIS_HD double m_exp(double v) { return exp(v); }
SGVIS_HD float m_expm1(float v) { return expm1f(v); }
SGVIS_HD double m_expm1(double v) { return expm1(v); }
SGVIS_HD float m_log1p(float v) { return log1pf(v); }
SGVIS_HD double m_log1p(double v) { return log1p(v); }
SGVIS_HD float m_tanh(float v) { return tanhf(v); }
SGVIS_HD double m_tanh(double v) { return tanh(v); }

// Integer division rounding toward minus / plus infinity, and the matching non-negative modulo (b > 0).
SGVIS_HD int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
SGVIS_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }
SGVIS_HD int pos_mod(int a, int b) { return a - floor_div(a, b) * b; }

}  // namespace sgvis
