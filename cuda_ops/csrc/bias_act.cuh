// Fused bias + activation + gain + clamp, and its first and second derivatives, one element at a time.
//
//     z = x + b[c];  v = act(z, alpha) * gain;  y = clamp(v, -clamp, clamp)             (kForward)
//     dx = g1 * gain * act'(z)   where |v| <= clamp, else 0                             (kGrad)
//     d(dx)/dx contracted with g2:  g2 * g1 * gain * act''(z)  where |v| <= clamp        (kGradGrad)
//
// Derivatives follow torch's conventions at the kinks, so that results match the reference ops' autograd:
// relu' (0) = 0, lrelu'(0) = alpha, elu/selu use the negative branch at 0, softplus is linear above 20, and
// the clamp passes the gradient where -clamp <= v <= clamp (inclusive).
#pragma once

#include "common.cuh"
#include "ops.h"

namespace sgvis {

template <typename A>
SGVIS_HD void act_eval(int act, A z, A alpha, A& a, A& d1, A& d2) {
    const A one = A(1), zero = A(0);
    switch (act) {
        case kRelu:
            a = z > zero ? z : zero;
            d1 = z > zero ? one : zero;
            d2 = zero;
            break;
        case kLrelu:
            a = z > zero ? z : z * alpha;
            d1 = z > zero ? one : alpha;
            d2 = zero;
            break;
        case kTanh: {
            const A t = m_tanh(z);
            a = t;
            d1 = one - t * t;
            d2 = A(-2) * t * d1;
            break;
        }
        case kSigmoid: {
            const A s = one / (one + m_exp(-z));
            a = s;
            d1 = s * (one - s);
            d2 = d1 * (one - A(2) * s);
            break;
        }
        case kElu:
            if (z > zero) {
                a = z;
                d1 = one;
                d2 = zero;
            } else {
                a = m_expm1(z);
                d1 = m_exp(z);
                d2 = d1;
            }
            break;
        case kSelu: {
            const A scale = A(1.0507009873554804934193349852946);
            const A sa = A(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717);
            if (z > zero) {
                a = scale * z;
                d1 = scale;
                d2 = zero;
            } else {
                a = sa * m_expm1(z);
                d1 = sa * m_exp(z);
                d2 = d1;
            }
            break;
        }
        case kSoftplus:
            if (z > A(20)) {
                a = z;
                d1 = one;
                d2 = zero;
            } else {
                const A s = one / (one + m_exp(-z));
                a = m_log1p(m_exp(z));
                d1 = s;
                d2 = s * (one - s);
            }
            break;
        case kSwish: {
            const A s = one / (one + m_exp(-z));
            a = z * s;
            d1 = s * (one + z * (one - s));
            d2 = s * (one - s) * (A(2) + z * (one - A(2) * s));
            break;
        }
        default:  // kLinear
            a = z;
            d1 = one;
            d2 = zero;
            break;
    }
}

template <typename T, typename A>
SGVIS_HD void bias_act_element(int64_t i, const BiasActParams& p) {
    const T* x = reinterpret_cast<const T*>(p.x);
    const T* b = reinterpret_cast<const T*>(p.b);
    T* y = reinterpret_cast<T*>(p.y);
    A z = to_acc<A, T>(x[i]);
    if (b != nullptr) {
        // 32-bit division where it fits: 64-bit integer division is slow on GPUs.
        const int64_t c = p.n <= 0x7fffffffLL ? int64_t((uint32_t(i) / uint32_t(p.inner)) % uint32_t(p.C))
                                              : (i / p.inner) % p.C;
        z += to_acc<A, T>(b[c]);
    }
    A a, d1, d2;
    act_eval<A>(p.act, z, A(p.alpha), a, d1, d2);
    const A gain = A(p.gain), clamp = A(p.clamp);
    A v = a * gain;
    const bool clamped = clamp >= A(0) && (v > clamp || v < -clamp);
    if (p.mode == kForward) {
        if (clamped) v = v > clamp ? clamp : -clamp;
        y[i] = from_acc<T, A>(v);
    } else if (p.mode == kGrad) {
        const A g1 = to_acc<A, T>(reinterpret_cast<const T*>(p.g1)[i]);
        y[i] = from_acc<T, A>(clamped ? A(0) : g1 * gain * d1);
    } else {
        const A g1 = to_acc<A, T>(reinterpret_cast<const T*>(p.g1)[i]);
        const A g2 = to_acc<A, T>(reinterpret_cast<const T*>(p.g2)[i]);
        y[i] = from_acc<T, A>(clamped ? A(0) : g2 * g1 * gain * d2);
    }
}

}  // namespace sgvis
