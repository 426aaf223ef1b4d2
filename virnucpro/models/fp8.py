"""FP8 (e4m3) matrix products of the float8 ESM-2 path: the quantisation arithmetic and the linear layer.

A float8 model runs four of a layer's six linears in e4m3 (`FP8_LINEARS`: q, k, fc1, fc2, 83 % of the
GEMM work; the value path, v and out_proj, carries most of the error and stays in float16):

- weights: one scale per output channel, `scale[n] = max|W[n, :]| / 448`, `W8 = e4m3(W / scale)`,
  made once by the models step (`quantize_weight`), checked against the float16 weights
  (`check_dequantised`: every element within e4m3's half-ulp, relative 2^-4, or 2^-10 * scale for the
  subnormals);
- activations: one scale per token (row), `scale[t] = max|x[t, :]| / 448` (`quantize_rows`); on a GPU the
  Triton kernels that produce them quantise in the same pass (add + LayerNorm, GELU);
- the product: `(x8 * sx) @ (W8 * sw).T + bias`, on CUDA through `torch._scaled_mm` (row-wise scales,
  float32 accumulation), elsewhere emulated: dequantised to float32 and multiplied in float32
  (`Fp8Linear`), which is the reference the tests check the arithmetic with.

e4m3 here is `torch.float8_e4m3fn` (largest finite value 448, no infinities); rounding is to nearest even,
values beyond +-448 saturate (they cannot occur: the scale maps the row's maximum to 448).
"""

from dataclasses import dataclass

import torch
from torch import nn

from virnucpro.device import FLOAT8_CAPABILITY

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
TINY = 1e-12  # floor of a row's or channel's maximum: an all-zero row gets a finite scale
FP8_LINEARS = ("qk", "fc1", "fc2")  # a float8 layer's e4m3 linears (qk: q and k fused)
MIN_CAPABILITY = FLOAT8_CAPABILITY  # e4m3 matrix units: Ada Lovelace and Hopper onwards


@dataclass
class Quantized:
    """Activations in e4m3: `data` (T, K) float8_e4m3fn, `scale` (T, 1) float32 (data * scale = x), and
    `plain`, the same activations in the compute dtype where a float16 linear also reads them (else None)."""

    data: torch.Tensor
    scale: torch.Tensor
    plain: torch.Tensor = None

    def dequantise(self):
        return self.data.to(torch.float32) * self.scale


def quantize_rows(x, keep=None):
    """x (T, K) float -> Quantized with one scale per row; `keep` (a dtype) keeps x in it as `plain`."""
    x32 = x.to(torch.float32)
    amax = x32.abs().amax(dim=1, keepdim=True).clamp_min(TINY)
    data = (x32 * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return Quantized(data, amax / E4M3_MAX, None if keep is None else x.to(keep))


def quantize_weight(w):
    """w (N, K) -> (W8 (N, K) float8_e4m3fn, scale (N,) float32), one scale per output channel."""
    w32 = w.to(torch.float32)
    amax = w32.abs().amax(dim=1, keepdim=True).clamp_min(TINY)
    data = (w32 * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return data, (amax / E4M3_MAX).reshape(-1)


def dequantise_weight(data, scale):
    return data.to(torch.float32) * scale.to(torch.float32)[:, None]


def check_dequantised(w, data, scale):
    """The largest excess of |dequantised - w| over e4m3's rounding bound (<= 0 when within it): the bound
    is half an ulp, 2^-4 of |w| for normal values and 2^-10 of the scale for subnormal ones, plus float32
    rounding of the scaling itself."""
    w32 = w.to(torch.float32)
    err = (dequantise_weight(data, scale) - w32).abs()
    bound = torch.maximum(w32.abs() * 2.0**-4, scale.to(torch.float32)[:, None] * 2.0**-10) * (1 + 2.0**-20)
    return float((err - bound).max()) if w32.numel() else 0.0


def supported(device):
    """Whether `device` has e4m3 matrix units (CUDA, compute capability >= 8.9)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


class Fp8Linear(nn.Module):
    """y = x W^T + b with x a `Quantized` and W in e4m3 with one scale per output channel.

    `weight` (N, K) float8_e4m3fn, `scale` (N,) float32, `bias` (N,) in `out_dtype`. On CUDA the product is
    `torch._scaled_mm` (row-wise scales, float32 accumulation) written in `out_dtype`; on the CPU it is
    emulated in float32. Returns (T, N) in `out_dtype`.
    """

    def __init__(self, weight, scale, bias, out_dtype):
        super().__init__()
        self.weight, self.scale = nn.Parameter(weight, False), nn.Parameter(scale.to(torch.float32), False)
        self.bias = nn.Parameter(bias.to(out_dtype), False)
        self.out_dtype = out_dtype

    def forward(self, x):
        if self.weight.device.type == "cuda":
            return torch._scaled_mm(x.data, self.weight.t(), scale_a=x.scale, scale_b=self.scale[None, :],
                                    bias=self.bias, out_dtype=self.out_dtype)
        w = dequantise_weight(self.weight, self.scale)
        return (x.dequantise() @ w.t() + self.bias.to(torch.float32)).to(self.out_dtype)
