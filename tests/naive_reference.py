"""Independent, deliberately naive StyleGAN2 forward passes used to check the real networks.

They read weights straight from a state dict (NVIDIA names, or rosinality's names) and compute each
layer per sample with explicit zero insertion, flipped kernels and plain convolutions, following the
paper's equations and each codebase's documented conventions rather than sharing code with sgvis.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2)


def _lrelu(x):
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def _fir_2d():
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = torch.outer(k, k)
    return k / k.sum()


def _fir(x, k, pad0, pad1):
    """True 2-D convolution of each channel with k after padding [pad0, pad1] on both axes."""
    c = x.shape[1]
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    return F.conv2d(x, k.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def _zero_insert(x, factor=2):
    n, c, h, w = x.shape
    out = torch.zeros([n, c, h * factor, w * factor], dtype=x.dtype)
    out[:, :, ::factor, ::factor] = x
    return out


def _upsample_img(img):
    # 4x upsampling gain compensates the inserted zeros; total padding keeps the size exact.
    return _fir(_zero_insert(img), _fir_2d() * 4, 2, 1)


def _dense(x, weight, bias, lr, act):
    y = x @ (weight * (lr / math.sqrt(weight.shape[1]))).t() + bias * lr
    return _lrelu(y) if act else y


def naive_mapping(sd, z, c, num_layers, psi, cutoff, num_ws):
    sd = {k: v.double() for k, v in sd.items()}
    x = z.double()
    x = x / torch.sqrt((x * x).mean(1, keepdim=True) + 1e-8)
    if c is not None and c.shape[1] > 0:
        y = _dense(c.double(), sd["mapping.embed.weight"], sd["mapping.embed.bias"], 1.0, False)
        y = y / torch.sqrt((y * y).mean(1, keepdim=True) + 1e-8)
        x = torch.cat([x, y], 1)
    for i in range(num_layers):
        x = _dense(x, sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"], 0.01, True)
    ws = x[:, None].repeat(1, num_ws, 1)
    rows = num_ws if cutoff is None else cutoff
    ws[:, :rows] = sd["mapping.w_avg"] + psi * (ws[:, :rows] - sd["mapping.w_avg"])
    return ws


def _modconv(x, weight, style, demod, up):
    """One sample: weight [O, I, k, k] scaled per input channel by style, then demodulated."""
    w = weight * style[None, :, None, None]
    if demod:
        w = w / torch.sqrt((w * w).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
    if not up:
        return F.conv2d(x, w, padding=w.shape[-1] // 2)
    # Upsampling layer: zero insertion, true convolution with the weight, then the 4x4 FIR (gain 4).
    k = w.shape[-1]
    y = F.conv2d(F.pad(_zero_insert(x), [k - 1, k - 1, k - 1, k - 1]), w.flip([2, 3]))
    return _fir(y, _fir_2d() * 4, 1, 1)[:, :, :2 * x.shape[2], :2 * x.shape[3]]


def naive_synthesis(sd, ws, resolutions, architecture="skip", conv_clamp=None):
    """NVIDIA-named StyleGAN2 synthesis, noise_mode const, fp32 semantics in float64."""
    sd = {k: v.double() for k, v in sd.items()}
    ws = ws.double()
    images = []
    for n in range(ws.shape[0]):
        x = img = None
        wi = 0
        for res in resolutions:
            p = f"synthesis.b{res}"
            layers = ["conv1"] if res == 4 else ["conv0", "conv1"]
            if res == 4:
                x = sd[f"{p}.const"][None]
            for layer in layers:
                q = f"{p}.{layer}"
                w = ws[n, wi]
                wi += 1
                style = w @ (sd[f"{q}.affine.weight"] / math.sqrt(w.shape[0])).t() + sd[f"{q}.affine.bias"]
                x = _modconv(x, sd[f"{q}.weight"], style, True, layer == "conv0")
                x = x + sd[f"{q}.noise_const"] * sd[f"{q}.noise_strength"]
                x = _lrelu(x + sd[f"{q}.bias"][None, :, None, None])
                if conv_clamp is not None:
                    x = x.clamp(-conv_clamp, conv_clamp)
            if img is not None:
                img = _upsample_img(img)
            if f"{p}.torgb.weight" in sd:
                q = f"{p}.torgb"
                w = ws[n, wi]
                wt = sd[f"{q}.weight"]
                style = (w @ (sd[f"{q}.affine.weight"] / math.sqrt(w.shape[0])).t() + sd[f"{q}.affine.bias"])
                style = style / math.sqrt(wt.shape[1])
                y = _modconv(x, wt, style, False, False) + sd[f"{q}.bias"][None, :, None, None]
                if conv_clamp is not None:
                    y = y.clamp(-conv_clamp, conv_clamp)
                img = y if img is None else img + y
        images.append(img)
    return torch.cat(images).float()


def naive_rosinality(sd, z, psi, latent_avg, size):
    """rosinality/stylegan2-pytorch's generator forward on its own weight names, per sample."""
    sd = {k: v.double() for k, v in sd.items()}
    n_mlp = len([k for k in sd if k.startswith("style.") and k.endswith(".weight")])
    x = z.double()
    x = x / torch.sqrt((x * x).mean(1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        x = _dense(x, sd[f"style.{i}.weight"], sd[f"style.{i}.bias"], 0.01, True)
    if psi != 1:
        x = latent_avg.double() + psi * (x - latent_avg.double())
    log_size = int(math.log2(size))
    n_latent = log_size * 2 - 2
    latent = x[:, None].repeat(1, n_latent, 1)

    def styled(h, prefix, noise, w, up):
        weight = sd[f"{prefix}.conv.weight"][0]
        mod = w @ (sd[f"{prefix}.conv.modulation.weight"] / math.sqrt(w.shape[0])).t() \
            + sd[f"{prefix}.conv.modulation.bias"]
        scale = 1 / math.sqrt(weight.shape[1] * weight.shape[2] ** 2)
        wt = scale * weight * mod[None, :, None, None]
        wt = wt / torch.sqrt((wt * wt).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if up:
            # rosinality: transposed conv (stride 2), then Blur with pad (1, 1) and kernel * 4.
            h = F.conv_transpose2d(h, wt.transpose(0, 1), stride=2)
            h = _fir(h, sd[f"{prefix}.conv.blur.kernel"], 1, 1)
        else:
            h = F.conv2d(h, wt, padding=weight.shape[-1] // 2)
        h = h + sd[f"{prefix}.noise.weight"] * sd[f"noises.{noise}"][0]
        return _lrelu(h + sd[f"{prefix}.activate.bias"][None, :, None, None])

    def to_rgb(h, prefix, w, skip):
        weight = sd[f"{prefix}.conv.weight"][0]
        mod = w @ (sd[f"{prefix}.conv.modulation.weight"] / math.sqrt(w.shape[0])).t() \
            + sd[f"{prefix}.conv.modulation.bias"]
        wt = weight * mod[None, :, None, None] / math.sqrt(weight.shape[1])
        out = F.conv2d(h, wt) + sd[f"{prefix}.bias"]
        if skip is not None:
            out = out + _fir(_zero_insert(skip), sd[f"{prefix}.upsample.kernel"], 2, 1)
        return out

    images = []
    for n in range(z.shape[0]):
        lat = latent[n]
        h = sd["input.input"]
        h = styled(h, "conv1", "noise_0", lat[0], False)
        skip = to_rgb(h, "to_rgb1", lat[1], None)
        i = 1
        for k in range(log_size - 2):
            h = styled(h, f"convs.{2 * k}", f"noise_{2 * k + 1}", lat[i], True)
            h = styled(h, f"convs.{2 * k + 1}", f"noise_{2 * k + 2}", lat[i + 1], False)
            skip = to_rgb(h, f"to_rgbs.{k}", lat[i + 2], skip)
            i += 2
        images.append(skip)
    return torch.cat(images).float(), latent.float()
