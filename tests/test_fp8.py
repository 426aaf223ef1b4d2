"""The float8 ESM-2 path on the CPU: the e4m3 arithmetic (scales, rounding, dequantisation bound) against
a hand-written reference, and the emulated float8 forward (quantise, dequantise, float32 matmul) against
an independent one: fair-esm's own float32 forward with the inputs and weights of q, k, fc1 and fc2
rounded through e4m3 by forward hooks, the way the placement was measured on the 3B model."""

import numpy as np
import pytest
import torch

from tests.tiny_esm2 import build_tiny_esm2, packed_from_fair_esm, padded_reference, random_proteins
from virnucpro.models import fp8
from virnucpro.models.esm2 import float8_state, packed_state, tokenizer, Esm2Config
from virnucpro.models.packing import pack

# every value e4m3 holds in [1, 2): 1 + m/8
E4M3_ONE_TO_TWO = [1 + m / 8 for m in range(8)]


def test_e4m3_rounds_to_nearest_even_on_the_format_grid():
    x = torch.tensor([1.0, 1.0625, 1.1875, 1.03, 448.0, -3.3, 2.0**-9, 2.0**-11])
    got = x.to(fp8.E4M3).float().tolist()
    # 1.0625 is halfway between 1 and 1.125: to even (1.0); 1.1875 halfway 1.125/1.25: to even (1.25);
    # 2^-9 is the smallest subnormal; 2^-11 rounds to 0
    assert got == [1.0, 1.0, 1.25, 1.0, 448.0, -3.25, 2.0**-9, 0.0]


def test_row_scales_map_each_rows_maximum_to_448():
    x = torch.tensor([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 1e-3, -0.75]])
    q = fp8.quantize_rows(x, keep=torch.float32)
    assert q.scale.shape == (3, 1) and q.scale.dtype == torch.float32
    assert q.scale[:, 0].tolist() == pytest.approx([2.0 / 448, 1e-12 / 448, 3.0 / 448], rel=1e-7)
    assert q.data.float().abs().amax(1).tolist() == [448.0, 0.0, 448.0]
    # by hand: 0.5 * 448 / 2 = 112 (exact), 1.0 * 224 = 224 (exact), 1e-3 * 448 / 3 = 0.1493, above the midpoint 0.1484 of
    # the grid points 0.140625 and 0.15625 (ulp 2^-6 in [2^-3, 2^-2)) -> 0.15625
    assert q.data[0].float().tolist() == [112.0, -448.0, 224.0]
    assert q.data[2].float().tolist() == [448.0, 0.15625, -112.0]
    assert torch.equal(q.plain, x)


def test_weight_scales_are_per_output_channel_and_within_the_bound():
    torch.manual_seed(0)
    w = torch.randn(48, 64) * torch.logspace(-3, 1, 48)[:, None]  # channels of very different sizes
    data, scale = fp8.quantize_weight(w)
    assert data.dtype == fp8.E4M3 and scale.shape == (48,)
    assert torch.allclose(scale, w.abs().amax(1) / 448, rtol=1e-7)
    assert fp8.check_dequantised(w, data, scale) <= 0
    err = (fp8.dequantise_weight(data, scale) - w).abs() / w.abs().clamp_min(1e-30)
    normal = w.abs() >= scale[:, None] * 2.0**-6  # e4m3's smallest normal is 2^-6
    assert err[normal].max() <= 2.0**-4 + 1e-6  # half an ulp of 3 mantissa bits


def test_the_dequantisation_check_catches_a_wrong_scale():
    torch.manual_seed(1)
    w = torch.randn(16, 32)
    data, scale = fp8.quantize_weight(w)
    scale = scale.clone()
    scale[3] *= 1.2
    assert fp8.check_dequantised(w, data, scale) > 0


def test_fp8_linear_emulation_is_the_dequantised_float32_product():
    torch.manual_seed(2)
    x, w, b = torch.randn(5, 32), torch.randn(24, 32), torch.randn(24)
    data, scale = fp8.quantize_weight(w)
    layer = fp8.Fp8Linear(data, scale, b, torch.float32)
    q = fp8.quantize_rows(x)
    want = (q.data.double() * q.scale.double()) @ (data.double() * scale.double()[:, None]).T + b.double()
    torch.testing.assert_close(layer(q).double(), want, rtol=1e-6, atol=1e-6)


def _round_through_e4m3(x, dim):
    """Independent of virnucpro.models.fp8: x rounded through e4m3 with one scale per slice along `dim`."""
    amax = x.abs().amax(dim=dim, keepdim=True).clamp_min(1e-12)
    return (x * (448.0 / amax)).to(torch.float8_e4m3fn).to(torch.float32) * (amax / 448.0)


def fair_esm_float8_reference(model):
    """A copy of fair-esm `model` whose q, k, fc1 and fc2 see e4m3-rounded inputs (per token) and weights
    (per output channel); v and out_proj stay float32."""
    import copy

    ref = copy.deepcopy(model)
    for layer in ref.layers:
        for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.fc1, layer.fc2):
            with torch.no_grad():
                linear.weight.copy_(_round_through_e4m3(linear.weight, 1))
            linear.register_forward_pre_hook(lambda mod, args: (_round_through_e4m3(args[0], -1),))
    return ref


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_esm2(num_layers=3, embed_dim=64, heads=4, seed=3)


def _embed(packed, seqs):
    batch = pack(tokenizer()(seqs), np.arange(len(seqs)))
    return packed.embed(batch).numpy()[: len(seqs)]


def test_emulated_float8_forward_equals_fair_esm_with_e4m3_linears(tiny):
    seqs = random_proteins([3, 20, 41, 100, 166], seed=4)
    packed = packed_from_fair_esm(tiny, "cpu", torch.float32, float8=True)
    got = _embed(packed, seqs)
    want = padded_reference(fair_esm_float8_reference(tiny), seqs, tiny.num_layers)
    plain = padded_reference(tiny, seqs, tiny.num_layers)
    # rounding happens in the same places: float32 agreement; e4m3 itself moves the embeddings far more
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    assert np.abs(got - plain).max() > 50 * np.abs(got - want).max()


def test_float8_state_splits_q_k_from_v_and_keeps_the_rest():
    model = build_tiny_esm2(num_layers=1, embed_dim=32, heads=2, seed=5)
    config = Esm2Config.of(model)
    ours = packed_state(config, model.state_dict(), torch.float32)
    state = float8_state(config, ours)
    assert "layers.0.qkv.weight" not in state
    assert state["layers.0.qk.weight"].dtype == fp8.E4M3 and state["layers.0.qk.weight"].shape == (64, 32)
    assert torch.equal(state["layers.0.v.weight"], ours["layers.0.qkv.weight"][64:])
    assert torch.equal(state["layers.0.qk.bias"], ours["layers.0.qkv.bias"][:64])
    assert torch.equal(state["layers.0.attn_out.weight"], ours["layers.0.attn_out.weight"])
    for name in ("qk", "fc1", "fc2"):
        w = ours["layers.0.qkv.weight"][:64] if name == "qk" else ours[f"layers.0.{name}.weight"]
        assert fp8.check_dequantised(w, state[f"layers.0.{name}.weight"], state[f"layers.0.{name}.scale"]) <= 0
