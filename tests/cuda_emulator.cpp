// CPU emulator for the sgvis CUDA kernels (tests only).
//
// Compiles the kernels' per-block code (cuda_ops/csrc/chain.cuh, bias_act.cuh) with a host compiler and runs
// it the way a GPU would, minus the parallelism: for every block of the launch plan, every phase is run for
// every thread id before the next phase starts (the kernel has a __syncthreads() there).  Shared memory is a
// buffer filled with NaN bytes before each block, so a read of a shared value that no phase wrote shows up
// in the results; window indices are bounds-checked (SGVIS_ASSERT).  tests/cuda_emulator.py exposes this
// through the same Python interface as the compiled extension.
#define SGVIS_EMULATE 1

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../cuda_ops/csrc/bias_act.cuh"
#include "../cuda_ops/csrc/chain.cuh"

static std::string g_error;

void sgvis_emu_fail(const char* cond, const char* file, int line) {
    if (g_error.empty()) {
        char buf[512];
        std::snprintf(buf, sizeof(buf), "emulator: %s failed at %s:%d", cond, file, line);
        g_error = buf;
    }
}

namespace {

template <typename T, typename A, bool HasAct>
void run_chain(const sgvis::ChainParams& p, const sgvis::ChainPlan& plan, bool reverse_threads) {
    std::vector<unsigned char> smem(plan.smem_bytes + 64);
    unsigned char* base = smem.data();
    base += (16 - reinterpret_cast<uintptr_t>(base) % 16) % 16;
    const int phases = sgvis::chain_num_phases(p);
    for (int n = 0; n < p.N; ++n) {
        for (int cb = 0; cb < plan.cblocks; ++cb) {
            for (int tile = 0; tile < int(plan.grid[0]); ++tile) {
                std::memset(base, 0xff, plan.smem_bytes);  // all-ones bytes: NaN in float and double
                for (int ph = 0; ph < phases; ++ph) {
                    for (int k = 0; k < plan.threads; ++k) {
                        const int tid = reverse_threads ? plan.threads - 1 - k : k;
                        sgvis::chain_phase<T, A, HasAct>(ph, p, plan, n, cb, tile, tid, base);
                    }
                    if (!g_error.empty()) return;
                }
            }
        }
    }
}

template <bool HasAct>
bool dispatch_chain(int dtype, const sgvis::ChainParams& p, const sgvis::ChainPlan& plan, bool rev) {
    switch (dtype) {
        case sgvis::kFloat32: run_chain<float, float, HasAct>(p, plan, rev); return true;
        case sgvis::kFloat16: run_chain<__half, float, HasAct>(p, plan, rev); return true;
        case sgvis::kBFloat16: run_chain<__nv_bfloat16, float, HasAct>(p, plan, rev); return true;
        case sgvis::kFloat64: run_chain<double, double, HasAct>(p, plan, rev); return true;
        default: return false;
    }
}

int finish(char* err, int errlen) {
    if (g_error.empty()) return 0;
    std::snprintf(err, errlen, "%s", g_error.c_str());
    return 1;
}

}  // namespace

extern "C" {

// dims: N, C, in_h, in_w, out_h, out_w, mid_h, mid_w; strides: sx[4], sy[4], sm[4];
// stages: num_stages * kStageInts ints; tiles: force_w, force_h, force_c (0 = the plan's choice);
// plan_out: tile_w, tile_h, tile_c, smem_bytes, grid x, grid y, grid z.
int emu_chain(const void* x, const void* bias, void* y, unsigned char* mask, const void* taps, int num_taps,
              int dtype, const long long* dims, const long long* strides, const long long* stages, int num_stages,
              double gain, double slope, double clamp, int act, int c_fastest, const int* tiles, int reverse_threads,
              long long* plan_out, char* err, int errlen) {
    g_error.clear();
    sgvis::ChainParams p = {};
    p.x = x;
    p.bias = bias;
    p.y = y;
    p.mask = mask;
    p.taps = taps;
    p.num_taps = num_taps;
    p.N = int(dims[0]);
    p.C = int(dims[1]);
    p.in_h = int(dims[2]);
    p.in_w = int(dims[3]);
    p.out_h = int(dims[4]);
    p.out_w = int(dims[5]);
    p.mid_h = int(dims[6]);
    p.mid_w = int(dims[7]);
    for (int d = 0; d < 4; ++d) {
        p.sx[d] = strides[d];
        p.sy[d] = strides[4 + d];
        p.sm[d] = strides[8 + d];
    }
    if (num_stages < 1 || num_stages > sgvis::kMaxStages) {
        std::snprintf(err, errlen, "bad number of stages");
        return 1;
    }
    p.num_stages = num_stages;
    for (int s = 0; s < num_stages; ++s) {
        const long long* v = stages + s * sgvis::kStageInts;
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
        if (!act && st.act != sgvis::kActNone) {
            std::snprintf(err, errlen, "upfirdn2d has no activation stage");
            return 1;
        }
    }
    p.gain = gain;
    p.slope = slope;
    p.clamp = clamp;
    const size_t acc_bytes = dtype == sgvis::kFloat64 ? sizeof(double) : sizeof(float);
    const sgvis::ChainPlan plan = sgvis::chain_plan(p, acc_bytes, c_fastest != 0, tiles[0], tiles[1], tiles[2]);
    if (!plan.ok) {
        std::snprintf(err, errlen, "%s", plan.error);
        return 1;
    }
    plan_out[0] = plan.tile_w;
    plan_out[1] = plan.tile_h;
    plan_out[2] = plan.tile_c;
    plan_out[3] = (long long)plan.smem_bytes;
    plan_out[4] = plan.grid[0];
    plan_out[5] = plan.grid[1];
    plan_out[6] = plan.grid[2];
    const bool ok = act ? dispatch_chain<true>(dtype, p, plan, reverse_threads != 0)
                        : dispatch_chain<false>(dtype, p, plan, reverse_threads != 0);
    if (!ok) {
        std::snprintf(err, errlen, "unsupported dtype");
        return 1;
    }
    return finish(err, errlen);
}

int emu_bias_act(const void* x, const void* b, const void* g1, const void* g2, void* y, int dtype, long long n,
                 long long inner, int channels, int act, int mode, double alpha, double gain, double clamp, char* err,
                 int errlen) {
    g_error.clear();
    sgvis::BiasActParams p = {};
    p.x = x;
    p.b = b;
    p.g1 = g1;
    p.g2 = g2;
    p.y = y;
    p.n = n;
    p.inner = inner;
    p.C = channels;
    p.act = act;
    p.mode = mode;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    for (long long i = 0; i < n; ++i) {
        switch (dtype) {
            case sgvis::kFloat32: sgvis::bias_act_element<float, float>(i, p); break;
            case sgvis::kFloat16: sgvis::bias_act_element<__half, float>(i, p); break;
            case sgvis::kBFloat16: sgvis::bias_act_element<__nv_bfloat16, float>(i, p); break;
            case sgvis::kFloat64: sgvis::bias_act_element<double, double>(i, p); break;
            default: std::snprintf(err, errlen, "unsupported dtype"); return 1;
        }
    }
    return finish(err, errlen);
}

// shape[4], strides: sg[4], sm[4], sy[4].
int emu_mask_mul(const void* g, const unsigned char* mask, void* y, int dtype, const long long* shape,
                 const long long* strides, double gain, double slope, char* err, int errlen) {
    g_error.clear();
    sgvis::MaskMulParams p = {};
    p.g = g;
    p.mask = mask;
    p.y = y;
    for (int d = 0; d < 4; ++d) {
        p.shape[d] = shape[d];
        p.sg[d] = strides[d];
        p.sm[d] = strides[4 + d];
        p.sy[d] = strides[8 + d];
    }
    p.gain = gain;
    p.slope = slope;
    const long long n = shape[0] * shape[1] * shape[2] * shape[3];
    for (long long i = 0; i < n; ++i) {
        switch (dtype) {
            case sgvis::kFloat32: sgvis::mask_mul_element<float, float>(i, p); break;
            case sgvis::kFloat16: sgvis::mask_mul_element<__half, float>(i, p); break;
            case sgvis::kBFloat16: sgvis::mask_mul_element<__nv_bfloat16, float>(i, p); break;
            case sgvis::kFloat64: sgvis::mask_mul_element<double, double>(i, p); break;
            default: std::snprintf(err, errlen, "unsupported dtype"); return 1;
        }
    }
    return finish(err, errlen);
}

}  // extern "C"
