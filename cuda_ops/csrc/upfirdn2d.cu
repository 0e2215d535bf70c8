// upfirdn2d: zero insertion, padding, FIR filtering and decimation in one pass (chain.cuh with one 2-D stage
// or two 1-D stages for a separable filter).
#include "chain_launch.cuh"

namespace sgvis {

std::string upfirdn2d_launch(const ChainParams& p, int dtype, bool c_fastest, void* stream) {
    for (int s = 0; s < p.num_stages; ++s)
        if (p.st[s].act != kActNone) return "upfirdn2d has no activation stage";
    return chain_launch<false>(p, dtype, c_fastest, stream);
}

}  // namespace sgvis
