"""Low-level ops used by the StyleGAN networks.

Every op has a pure-PyTorch reference path that runs on any device and supports autograd (including
double backward).  Custom CUDA kernels plug in behind the same functions; the networks only ever call
the public functions below.
"""
from cuda_ops.bias_act import ACTIVATIONS, bias_act
from cuda_ops.upfirdn2d import (downsample2d, filter2d, filter_size, setup_filter, upfirdn2d,
                                upsample2d)
from cuda_ops.filtered_lrelu import filtered_lrelu

__all__ = ["ACTIVATIONS", "bias_act", "upfirdn2d", "upsample2d", "downsample2d", "filter2d",
           "setup_filter", "filter_size", "filtered_lrelu"]
