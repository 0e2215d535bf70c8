// A chain of FIR resampling stages computed tile by tile in shared memory: the engine behind upfirdn2d
// (one 2-D stage, or two 1-D stages for a separable filter) and filtered_lrelu (up-filter stage(s), leaky
// ReLU with gain and clamp, down-filter stage(s)) in a single kernel launch.
//
// One stage maps a source grid to a destination grid, per axis:
//
//     dst[o] = sum_{j=0}^{K-1} g[j] * U[o * down + j - pad0],   U[s] = src[s / up] if s % up == 0, else 0
//
// i.e. zero insertion by `up`, padding by `pad0` in front, correlation with the taps g (the Python side
// passes taps already oriented for correlation, with the gain folded in) and decimation by `down`.  Samples
// of src outside the image are zero.  A 2-D stage has a [K_h, K_w] tap array; a 1-D stage along x has
// K_h = 1 and up/down/pad of 1/1/0 along y (and the other way round for y), so the same code does both.
//
// A block computes a tile of the final output (tile_c channels x tile_h rows x tile_w columns).  Working
// backwards through the chain, every level (stage input) needs a fixed-size window, whose size depends only
// on the tile size and the stage parameters:
//
//     extent_in = ((extent_out - 1) * down + K - 1) / up + 1,   origin_in = ceil((origin_out * down - pad0) / up)
//
// Level 0 is read from global memory (plus bias), every other level lives in one of two shared-memory
// buffers (ping-pong), the last stage writes the output tile to global memory.
#pragma once

#include "common.cuh"
#include "ops.h"

namespace sgvis {

constexpr int kChainThreads = 256;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // the per-block limit that needs no opt-in on any GPU

struct ChainPlan {
    bool ok;
    const char* error;
    int tile_w, tile_h, tile_c;
    int ext_w[kMaxStages + 1], ext_h[kMaxStages + 1];  // window size of each level (level num_stages = tile)
    size_t buf_off[2];                                 // byte offsets of the two level buffers
    size_t smem_bytes;
    int tiles_x, tiles_y, cblocks;
    int c_fastest;  // global loads/stores walk channels fastest (channels_last) instead of x
    int threads;
    unsigned grid[3];
};

inline int pow2_at_least(int v) {
    int p = 1;
    while (p < v) p <<= 1;
    return p;
}

inline void chain_extents(const ChainParams& p, ChainPlan& plan) {
    const int S = p.num_stages;
    plan.ext_w[S] = plan.tile_w;
    plan.ext_h[S] = plan.tile_h;
    for (int s = S - 1; s >= 0; --s) {
        const ChainStage& st = p.st[s];
        plan.ext_w[s] = ((plan.ext_w[s + 1] - 1) * st.down_x + st.k_w - 1) / st.up_x + 1;
        plan.ext_h[s] = ((plan.ext_h[s + 1] - 1) * st.down_y + st.k_h - 1) / st.up_y + 1;
    }
}

// Elements between the channel planes of a shared window: h * w rounded up to an odd number, so that 32
// threads reading one pixel of 32 consecutive channels (channels_last) hit 32 different banks.
SGVIS_HD int plane_stride(int h, int w) { return (h * w) | 1; }

// The smallest tile that covers `out` with as many tiles as `tile` needs (36 outputs with tiles of 32 -> two
// tiles of 18, not 32 + 4).
inline int balanced_tile(int tile, int out) {
    const int n = (out + tile - 1) / tile;
    return (out + n - 1) / n;
}

inline size_t align16(size_t v) { return (v + 15) & ~size_t(15); }

inline size_t chain_smem(const ChainParams& p, ChainPlan& plan, size_t acc_bytes) {
    chain_extents(p, plan);
    size_t buf[2] = {0, 0};
    for (int l = 0; l < p.num_stages; ++l) {  // levels held in shared memory: 0 .. num_stages - 1
        size_t n = size_t(plan.tile_c) * plane_stride(plan.ext_h[l], plan.ext_w[l]);
        if (n > buf[l % 2]) buf[l % 2] = n;
    }
    plan.buf_off[0] = align16(size_t(p.num_taps) * acc_bytes);
    plan.buf_off[1] = plan.buf_off[0] + align16(buf[0] * acc_bytes);
    plan.smem_bytes = plan.buf_off[1] + align16(buf[1] * acc_bytes);
    return plan.smem_bytes;
}

// Chooses the tile (aiming at ~1024 outputs per block of 256 threads) and the grid.  force_* > 0 pins a
// tile dimension (tests use it to exercise partial tiles and odd shapes).
inline ChainPlan chain_plan(const ChainParams& p, size_t acc_bytes, bool c_fastest, int force_w = 0,
                            int force_h = 0, int force_c = 0) {
    ChainPlan plan = {};
    plan.ok = false;
    plan.error = "";
    plan.threads = kChainThreads;
    plan.c_fastest = c_fastest ? 1 : 0;
    if (p.num_stages < 1 || p.num_stages > kMaxStages) {
        plan.error = "number of filter stages out of range";
        return plan;
    }
    if (p.N < 1 || p.C < 1 || p.out_h < 1 || p.out_w < 1 || p.in_h < 1 || p.in_w < 1) {
        plan.error = "empty input or output";
        return plan;
    }
    for (int s = 0; s < p.num_stages; ++s) {
        const ChainStage& st = p.st[s];
        if (st.up_x < 1 || st.up_y < 1 || st.down_x < 1 || st.down_y < 1 || st.k_w < 1 || st.k_h < 1 ||
            st.tap_off < 0 || st.tap_off + st.k_w * st.k_h > p.num_taps) {
            plan.error = "invalid stage parameters";
            return plan;
        }
    }
    const int out_w2 = pow2_at_least(p.out_w), out_h2 = pow2_at_least(p.out_h);
    if (c_fastest) {
        plan.tile_c = p.C < 32 ? p.C : 32;
        plan.tile_w = balanced_tile(out_w2 < 8 ? out_w2 : 8, p.out_w);
        int h = 1024 / (plan.tile_c * plan.tile_w);
        h = h < 1 ? 1 : h;
        plan.tile_h = balanced_tile(out_h2 < h ? out_h2 : h, p.out_h);
    } else {
        plan.tile_w = balanced_tile(out_w2 < 32 ? out_w2 : 32, p.out_w);
        plan.tile_h = balanced_tile(out_h2 < 32 ? out_h2 : 32, p.out_h);
        int c = 1024 / (plan.tile_w * plan.tile_h);
        c = c < 1 ? 1 : c;
        plan.tile_c = p.C < c ? p.C : c;
    }
    if (force_w > 0) plan.tile_w = force_w;
    if (force_h > 0) plan.tile_h = force_h;
    if (force_c > 0) plan.tile_c = force_c;
    while (chain_smem(p, plan, acc_bytes) > kMaxSharedBytes) {
        if (plan.tile_c > (c_fastest ? 8 : 1)) {
            plan.tile_c = (plan.tile_c + 1) / 2;
        } else if (plan.tile_h > 1 && plan.tile_h >= plan.tile_w) {
            plan.tile_h /= 2;
        } else if (plan.tile_w > 1) {
            plan.tile_w /= 2;
        } else if (plan.tile_c > 1) {
            plan.tile_c = (plan.tile_c + 1) / 2;
        } else {
            plan.error = "filters too large: even a 1x1 output tile does not fit in 48 KiB of shared memory";
            return plan;
        }
    }
    if (force_w <= 0) plan.tile_w = balanced_tile(plan.tile_w, p.out_w);
    if (force_h <= 0) plan.tile_h = balanced_tile(plan.tile_h, p.out_h);
    chain_smem(p, plan, acc_bytes);  // (balancing never grows a tile) recompute the extents
    plan.tiles_x = (p.out_w + plan.tile_w - 1) / plan.tile_w;
    plan.tiles_y = (p.out_h + plan.tile_h - 1) / plan.tile_h;
    plan.cblocks = (p.C + plan.tile_c - 1) / plan.tile_c;
    const long long tiles = (long long)plan.tiles_x * plan.tiles_y;
    if (tiles > 0x7fffffffLL) {
        plan.error = "output too large for the grid";
        return plan;
    }
    plan.grid[0] = (unsigned)tiles;
    plan.grid[1] = (unsigned)(plan.cblocks < 65535 ? plan.cblocks : 65535);
    plan.grid[2] = (unsigned)(p.N < 65535 ? p.N : 65535);
    plan.ok = true;
    return plan;
}

// Where a stage's result goes: the next level's shared-memory window, or the output tensor.  With act, the
// leaky ReLU (and gain, clamp) is applied first and the gradient code is written to the mask.
template <typename T, typename A>
struct StageStore {
    A* dst;  // shared window [tile_c][h][w] (when !to_global)
    int h, w;
    bool to_global;
    T* y;
    const int64_t* sy;
    int64_t n;
    int c0, y0, x0;  // global origin of the window
    int C, lim_h, lim_w;
    bool act;
    A gain, slope, clamp;
    uint8_t* mask;
    const int64_t* sm;
    int mid_h, mid_w;

    SGVIS_HD void operator()(int c, int dy, int dx, A v) const {
        if (act) {
            A a = v > A(0) ? v : v * slope;
            a = a * gain;
            uint8_t code = v > A(0) ? 1 : 0;
            if (clamp >= A(0) && (a > clamp || a < -clamp)) {
                a = a > clamp ? clamp : -clamp;
                code = 2;
            }
            if (mask != nullptr) {
                const int gy = y0 + dy, gx = x0 + dx, gc = c0 + c;
                if (gc < C && gy >= 0 && gy < mid_h && gx >= 0 && gx < mid_w)
                    mask[n * sm[0] + gc * sm[1] + gy * sm[2] + gx * sm[3]] = code;
            }
            v = a;
        }
        if (to_global) {
            const int gy = y0 + dy, gx = x0 + dx, gc = c0 + c;
            if (gc < C && gy < lim_h && gx < lim_w)
                y[n * sy[0] + gc * sy[1] + gy * sy[2] + gx * sy[3]] = from_acc<T, A>(v);
        } else {
            dst[c * plane_stride(h, w) + dy * w + dx] = v;
        }
    }
};

// One stage over a tile: src window [nc][src_h][src_w] (planes plane_stride() apart) whose element (0, 0) is
// global (src_y0, src_x0);
// destination window [nc][dst_h][dst_w] at global (dst_y0, dst_x0).  c_fastest orders the work so that
// consecutive threads take consecutive channels (for channels_last global stores).
template <typename A, typename Store>
SGVIS_HD void fir_stage(const A* src, int src_h, int src_w, int src_y0, int src_x0, int nc, int dst_h,
                        int dst_w, int dst_y0, int dst_x0, const A* g, const ChainStage& st, bool c_fastest,
                        int tid, int nthreads, const Store& store) {
    const int count = nc * dst_h * dst_w;
    for (int e = tid; e < count; e += nthreads) {
        int c, dy, dx;
        if (c_fastest) {
            c = e % nc;
            const int t = e / nc;
            dx = t % dst_w;
            dy = t / dst_w;
        } else {
            dx = e % dst_w;
            const int t = e / dst_w;
            dy = t % dst_h;
            c = t / dst_h;
        }
        // Position of tap 0 in the zero-inserted, padded source; the first tap that lands on a real
        // source sample, and that sample's row / column in the window.  Later taps step by `up`.
        const int sy = (dst_y0 + dy) * st.down_y - st.pad_y;
        const int sx = (dst_x0 + dx) * st.down_x - st.pad_x;
        const int jy0 = pos_mod(-sy, st.up_y);
        const int jx0 = pos_mod(-sx, st.up_x);
        const int r0 = (sy + jy0) / st.up_y - src_y0;  // exact divisions
        const int q0 = (sx + jx0) / st.up_x - src_x0;
        const A* plane = src + c * plane_stride(src_h, src_w);
        A acc = A(0);
        int r = r0;
        for (int jy = jy0; jy < st.k_h; jy += st.up_y, ++r) {
            SGVIS_ASSERT(r >= 0 && r < src_h);
            const A* row = plane + (size_t)r * src_w;
            const A* grow = g + jy * st.k_w;
            int q = q0;
            for (int jx = jx0; jx < st.k_w; jx += st.up_x, ++q) {
                SGVIS_ASSERT(q >= 0 && q < src_w);
                acc += grow[jx] * row[q];
            }
        }
        store(c, dy, dx, acc);
    }
}

// Window origins of every level for the tile (tx, ty), from the output backwards.
SGVIS_HD void chain_origins(const ChainParams& p, const ChainPlan& plan, int tx, int ty, int* oy,
                                   int* ox) {
    const int S = p.num_stages;
    oy[S] = ty * plan.tile_h;
    ox[S] = tx * plan.tile_w;
    for (int s = S - 1; s >= 0; --s) {
        const ChainStage& st = p.st[s];
        oy[s] = ceil_div(oy[s + 1] * st.down_y - st.pad_y, st.up_y);
        ox[s] = ceil_div(ox[s + 1] * st.down_x - st.pad_x, st.up_x);
    }
}

SGVIS_HD int chain_num_phases(const ChainParams& p) { return p.num_stages + 1; }

// Phase 0 loads the taps and the level-0 window (input + bias, zero outside the image); phase s + 1 runs
// stage s.  Every thread of the block calls every phase, with a block-wide barrier in between.  HasAct =
// false (upfirdn2d) compiles the activation out.
template <typename T, typename A, bool HasAct>
SGVIS_HD void chain_phase(int phase, const ChainParams& p, const ChainPlan& plan, int n, int cb, int tile,
                          int tid, unsigned char* smem) {
    const int nthreads = plan.threads;
    A* taps = reinterpret_cast<A*>(smem);
    A* buf[2] = {reinterpret_cast<A*>(smem + plan.buf_off[0]), reinterpret_cast<A*>(smem + plan.buf_off[1])};
    const int tx = tile % plan.tiles_x, ty = tile / plan.tiles_x;
    const int c0 = cb * plan.tile_c;
    const int nc = plan.tile_c;
    int oy[kMaxStages + 1], ox[kMaxStages + 1];
    chain_origins(p, plan, tx, ty, oy, ox);

    if (phase == 0) {
        const A* gtaps = reinterpret_cast<const A*>(p.taps);
        for (int i = tid; i < p.num_taps; i += nthreads) taps[i] = gtaps[i];
        const T* x = reinterpret_cast<const T*>(p.x);
        const T* bias = reinterpret_cast<const T*>(p.bias);
        const int h = plan.ext_h[0], w = plan.ext_w[0];
        const int count = nc * h * w;
        for (int e = tid; e < count; e += nthreads) {
            int c, dy, dx;
            if (plan.c_fastest) {
                c = e % nc;
                const int t = e / nc;
                dx = t % w;
                dy = t / w;
            } else {
                dx = e % w;
                const int t = e / w;
                dy = t % h;
                c = t / h;
            }
            const int gy = oy[0] + dy, gx = ox[0] + dx, gc = c0 + c;
            A v = A(0);
            if (gc < p.C && gy >= 0 && gy < p.in_h && gx >= 0 && gx < p.in_w) {
                v = to_acc<A, T>(x[(int64_t)n * p.sx[0] + gc * p.sx[1] + gy * p.sx[2] + gx * p.sx[3]]);
                if (bias != nullptr) v += to_acc<A, T>(bias[gc]);
            }
            buf[0][c * plane_stride(h, w) + dy * w + dx] = v;
        }
        return;
    }

    const int s = phase - 1;
    const ChainStage& st = p.st[s];
    const bool last = s == p.num_stages - 1;
    StageStore<T, A> store;
    store.dst = buf[(s + 1) % 2];
    store.h = plan.ext_h[s + 1];
    store.w = plan.ext_w[s + 1];
    store.to_global = last;
    store.y = reinterpret_cast<T*>(p.y);
    store.sy = p.sy;
    store.n = n;
    store.c0 = c0;
    store.y0 = oy[s + 1];
    store.x0 = ox[s + 1];
    store.C = p.C;
    store.lim_h = p.out_h;
    store.lim_w = p.out_w;
    store.act = HasAct && st.act == kActLrelu;
    store.gain = A(p.gain);
    store.slope = A(p.slope);
    store.clamp = A(p.clamp);
    store.mask = p.mask;
    store.sm = p.sm;
    store.mid_h = p.mid_h;
    store.mid_w = p.mid_w;
    fir_stage<A>(buf[s % 2], plan.ext_h[s], plan.ext_w[s], oy[s], ox[s], nc, plan.ext_h[s + 1],
                 plan.ext_w[s + 1], oy[s + 1], ox[s + 1], taps + st.tap_off, st, last && plan.c_fastest, tid,
                 nthreads, store);
}

// Gradient of filtered_lrelu's activation from the saved mask: y = g * (gain | gain * slope | 0) for mask
// codes 1 | 0 | 2.  i walks the logical [N, C, H, W] index; every tensor has its own strides.
template <typename T, typename A>
SGVIS_HD void mask_mul_element(int64_t i, const MaskMulParams& p) {
    const int64_t w = i % p.shape[3];
    int64_t t = i / p.shape[3];
    const int64_t h = t % p.shape[2];
    t /= p.shape[2];
    const int64_t c = t % p.shape[1];
    const int64_t n = t / p.shape[1];
    const uint8_t code = p.mask[n * p.sm[0] + c * p.sm[1] + h * p.sm[2] + w * p.sm[3]];
    const A gain = A(p.gain);
    const A k = code == 1 ? gain : (code == 0 ? gain * A(p.slope) : A(0));
    const T* g = reinterpret_cast<const T*>(p.g);
    T* y = reinterpret_cast<T*>(p.y);
    y[n * p.sy[0] + c * p.sy[1] + h * p.sy[2] + w * p.sy[3]] =
        from_acc<T, A>(to_acc<A, T>(g[n * p.sg[0] + c * p.sg[1] + h * p.sg[2] + w * p.sg[3]]) * k);
}

}  // namespace sgvis
