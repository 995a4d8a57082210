"""The attention modules that can take SE's place, against direct implementations of their papers' equations.

Each reference below is written from the paper's equations with plain tensor operations and only reads the module's
weights (float64, small random tensors, weights randomised so that no gate sits at a constant). The model-level tests
check that every module is selectable by config, counted, captured and steered like SE.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seresnet import SEResNetConfig, count_macs, count_params, create_model, get_config, list_models
from seresnet.attention import (
    ATTENTION_OPTIONS,
    ATTENTIONS,
    CBAMBlock,
    ECABlock,
    FCABlock,
    GCBlock,
    GEBlock,
    NoSqueezeBlock,
    SEVar1Block,
    SEVar2Block,
    SEVar3Block,
    build_attention,
    dct_frequencies,
    eca_kernel_size,
)
from seresnet.hooks import (
    Constant,
    ExcitationStats,
    Off,
    Replace,
    ReplaceRows,
    Scale,
    capture,
    excitation_stats,
    steer,
)
from seresnet.se import SEBlock

NON_SE = [a for a in ATTENTIONS if a != "se"]
ALL = list(ATTENTIONS)


def randomise(module: nn.Module, seed: int = 0, std: float = 0.5) -> nn.Module:
    """Random parameters (also the ones initialised to 0 or 1) and BN statistics; eval mode, float64."""
    g = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
    return module


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def model(name: str = "se_resnet20", seed: int = 0, **overrides) -> nn.Module:
    """A model with random attention weights (GC's last layer starts at zero, CBAM's spatial BN at zero) and BN
    statistics, in eval mode."""
    torch.manual_seed(seed)
    m = create_model(name, **overrides)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for se in m.se_blocks().values():
            for p in se.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return m.eval()


# --- ECA -----------------------------------------------------------------------------------------------------------
def nearest_odd(t: float) -> int:
    """The odd integer nearest to t, the larger one at a tie (written out, not by the floor trick of the module)."""
    below = math.floor(t) if math.floor(t) % 2 == 1 else math.floor(t) - 1
    above = below + 2
    return above if above - t <= t - below else below


@pytest.mark.parametrize("channels", [1, 2, 4, 8, 16, 24, 32, 64, 100, 128, 256, 512, 1000, 1024, 2048, 4096])
def test_eca_kernel_size_follows_the_formula(channels: int) -> None:
    t = abs(math.log2(channels) / 2 + 1 / 2)
    assert eca_kernel_size(channels) == nearest_odd(t)
    assert ECABlock(channels).excitation.conv.weight.shape == (1, 1, nearest_odd(t))


def test_eca_kernel_sizes_of_the_paper_widths() -> None:
    # ResNet widths: 64 -> 3, 128 / 256 / 512 / 1024 -> 5, 2048 -> 7 (as the authors' code and timm give them)
    assert [eca_kernel_size(c) for c in (16, 32, 64, 128, 256, 512, 1024, 2048)] == [3, 3, 3, 5, 5, 5, 5, 7]
    assert eca_kernel_size(64, gamma=1, b=0) == 7  # log2(64) = 6 -> nearest odd 7 (tie goes up)
    assert ECABlock(64, kernel_size=9).excitation.conv.weight.shape == (1, 1, 9)
    for bad in (0, 4, -3, 2.0, True):
        with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
            ECABlock(64, kernel_size=bad)


@pytest.mark.parametrize(("channels", "kernel_size", "squeeze"), [(16, None, "avg"), (64, None, "avg"),
                                                                  (256, None, "avg"), (32, 7, "avg"), (24, 5, "max")])
def test_eca_matches_the_equation(channels: int, kernel_size: int | None, squeeze: str) -> None:
    block = randomise(ECABlock(channels, squeeze=squeeze, kernel_size=kernel_size))
    x = randn(2, channels, 5, 6)
    w = block.excitation.conv.weight.reshape(-1)
    k = w.numel()
    z = x.mean(dim=(2, 3)) if squeeze == "avg" else x.flatten(2).max(dim=2).values
    # y_c = sum_j w_j z_{c + j - (k - 1) / 2}, zero outside 0..C-1: each channel sees its k neighbours
    y = torch.zeros_like(z)
    for c in range(channels):
        for j in range(k):
            src = c + j - (k - 1) // 2
            if 0 <= src < channels:
                y[:, c] += w[j] * z[:, src]
    s = torch.sigmoid(y)
    with torch.no_grad():
        close(block.excitation(block.squeeze(x)), s)
        close(block(x), x * s[:, :, None, None])
    assert sum(p.numel() for p in block.parameters()) == k


# --- SE variants ---------------------------------------------------------------------------------------------------
def test_se_variants_match_their_equations() -> None:
    c = 12
    x = randn(3, c, 4, 5)
    z = x.mean(dim=(2, 3))
    var1, var2, var3 = SEVar1Block(c).double(), randomise(SEVar2Block(c)), randomise(SEVar3Block(c))
    with torch.no_grad():
        close(var1(x), x * torch.sigmoid(z)[:, :, None, None])
        close(var2(x), x * torch.sigmoid(var2.excitation.weight * z)[:, :, None, None])
        close(var3(x), x * torch.sigmoid(z @ var3.excitation.fc.weight.T)[:, :, None, None])
    # Table 2 of ECA-Net: 0, C and C^2 parameters
    assert [sum(p.numel() for p in b.parameters()) for b in (var1, var2, var3)] == [0, c, c * c]
    assert torch.equal(SEVar2Block(c).excitation.weight, torch.ones(c))  # starts as SE-Var1


# --- Gather-Excite -------------------------------------------------------------------------------------------------
def test_ge_global_extent_is_a_per_channel_gate() -> None:
    x = randn(2, 8, 5, 7)
    block = GEBlock(8).double()
    assert not block.spatial_excitation and sum(p.numel() for p in block.parameters()) == 0
    with torch.no_grad():
        close(block.excitation(block.squeeze(x), x.shape[-2:]), torch.sigmoid(x.mean(dim=(2, 3))))
        close(block(x), x * torch.sigmoid(x.mean(dim=(2, 3)))[:, :, None, None])


@pytest.mark.parametrize(("extent", "size"), [(2, (7, 9)), (4, (8, 8)), (3, (10, 5))])
def test_ge_local_extent_matches_gather_and_nearest_upsampling(extent: int, size: tuple[int, int]) -> None:
    h, w = size
    x = randn(2, 3, h, w)
    k, pad = 2 * extent - 1, extent - 1
    ho, wo = (h + 2 * pad - k) // extent + 1, (w + 2 * pad - k) // extent + 1
    # gather: the mean over each window (kernel 2e - 1, stride e) of the positions inside the map
    gathered = torch.zeros(2, 3, ho, wo, dtype=torch.float64)
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * extent - pad, j * extent - pad
            win = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            gathered[:, :, i, j] = win.mean(dim=(2, 3))
    # excite: nearest neighbour back to H x W (output row r reads row floor(r * ho / h)), then the sigmoid
    rows = [math.floor(r * ho / h) for r in range(h)]
    cols = [math.floor(c * wo / w) for c in range(w)]
    s = torch.sigmoid(gathered[:, :, rows][:, :, :, cols])
    block = GEBlock(3, extent=extent).double()
    assert block.spatial_excitation
    with torch.no_grad():
        close(block.squeeze(x), gathered)
        close(block.excitation(block.squeeze(x), (h, w)), s)
        close(block(x), x * s)
    with pytest.raises(ValueError, match="extent must be None"):
        GEBlock(3, extent=1)


# --- GC --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("channels", "reduction", "hidden"), [(16, 4, 4), (64, 16, 4), (16, 16, 2), (8, 16, 2)])
def test_gc_matches_the_equation(channels: int, reduction: int, hidden: int) -> None:
    block = randomise(GCBlock(channels, reduction=reduction))
    assert block.hidden == hidden  # max(C // r, 2): LayerNorm over one unit would be a constant
    x = randn(2, channels, 4, 6)
    wk, bk = block.squeeze.conv_mask.weight.reshape(-1), block.squeeze.conv_mask.bias
    e = block.excitation
    # context: sum_j softmax_j(W_k x_j) x_j
    logits = torch.einsum("c,bchw->bhw", wk, x).flatten(1) + bk
    alpha = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    context = torch.einsum("bcn,bn->bc", x.flatten(2), alpha)
    # transform: W_v2 ReLU(LN(W_v1 context)), LayerNorm over the C/r units with eps 1e-5 (GCNet's nn.LayerNorm)
    v = context @ e.fc1.weight.T + e.fc1.bias
    ln = (v - v.mean(dim=1, keepdim=True)) / torch.sqrt(v.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
    t = torch.relu(ln * e.norm.weight + e.norm.bias) @ e.fc2.weight.T + e.fc2.bias
    with torch.no_grad():
        close(block.squeeze(x), context)
        close(block.excitation(context), t)
        close(block(x), x + t[:, :, None, None])  # fusion by addition
    h, c = hidden, channels
    assert sum(p.numel() for p in block.parameters()) == (c + 1) + (c * h + h) + 2 * h + (h * c + c)
    assert GCBlock.neutral == 0.0


def test_gc_starts_as_the_identity() -> None:
    block = GCBlock(32).double()
    x = randn(2, 32, 5, 5)
    with torch.no_grad():
        assert torch.equal(block(x), x)  # GCNet's init: the transform's last layer is zero
    assert not torch.equal(block.squeeze.conv_mask.weight, torch.zeros_like(block.squeeze.conv_mask.weight))


# --- CBAM ------------------------------------------------------------------------------------------------------------
def test_cbam_matches_the_equations() -> None:
    c, h, w = 32, 9, 8
    block = randomise(CBAMBlock(c, reduction=8))
    x = randn(2, c, h, w)
    e, sg = block.excitation, block.spatial_gate

    def mlp(v: torch.Tensor) -> torch.Tensor:  # W1 ReLU(W0 v), shared, no biases
        return torch.relu(v @ e.fc1.weight.T) @ e.fc2.weight.T

    mc = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.flatten(2).max(dim=2).values))
    f1 = x * mc[:, :, None, None]
    # spatial: [AvgPool_c(F'); MaxPool_c(F')] -> 7x7 conv (zero padding 3) -> BN (eval: affine) -> sigmoid
    pooled = torch.stack([f1.mean(dim=1), f1.max(dim=1).values], dim=1)
    padded = F.pad(pooled, (3, 3, 3, 3))
    conv = torch.zeros(2, h, w, dtype=torch.float64)
    for ch in range(2):
        for dy in range(7):
            for dx in range(7):
                conv += sg.conv.weight[0, ch, dy, dx] * padded[:, ch, dy:dy + h, dx:dx + w]
    bn = sg.bn
    normed = (conv - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    ms = torch.sigmoid(normed)[:, None]
    with torch.no_grad():
        close(block.squeeze(x), torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))
        close(block.excitation(block.squeeze(x)), mc)
        close(block.spatial_gate(f1), ms)
        close(block(x), f1 * ms)
    hidden = c // 8
    assert sum(p.numel() for p in block.parameters()) == 2 * c * hidden + 2 * 49 + 2


def test_cbam_spatial_gate_starts_at_one_half() -> None:
    block = CBAMBlock(16).eval()
    with torch.no_grad():
        m = block.spatial_gate(torch.randn(2, 16, 6, 6))
    assert m.shape == (2, 1, 6, 6)
    torch.testing.assert_close(m, torch.full_like(m, 0.5))  # the authors' init: spatial BN weight 0


# --- FcaNet ----------------------------------------------------------------------------------------------------------
def dct_basis(u: int, v: int, n: int = 7) -> torch.Tensor:
    """B^{u,v}[h, w] = cos(pi u (h + 1/2) / N) cos(pi v (w + 1/2) / N), orthonormal (FcaNet's code)."""
    pos = torch.arange(n, dtype=torch.float64)
    bu = torch.cos(math.pi * u * (pos + 0.5) / n) * math.sqrt((1 if u == 0 else 2) / n)
    bv = torch.cos(math.pi * v * (pos + 0.5) / n) * math.sqrt((1 if v == 0 else 2) / n)
    return bu[:, None] * bv[None, :]


@pytest.mark.parametrize("size", [7, 14])
def test_fca_matches_the_equation(size: int) -> None:
    c, r = 32, 4
    block = randomise(FCABlock(c, reduction=r, frequencies="top16"))
    x = randn(2, c, size, size)
    pooled = x if size == 7 else x.reshape(2, c, 7, 2, 7, 2).mean(dim=(3, 5))  # adaptive pooling to 7x7
    top16 = [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
             (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2)]
    assert dct_frequencies("top16") == top16
    # channel group i (C / 16 = 2 channels) is reduced with the DCT basis of frequency i
    z = torch.stack([(pooled[:, ch] * dct_basis(*top16[ch // 2])).sum(dim=(1, 2)) for ch in range(c)], dim=1)
    e = block.excitation
    s = torch.sigmoid(torch.relu(z @ e.fc1.weight.T) @ e.fc2.weight.T)
    with torch.no_grad():
        close(block.squeeze(x), z)
        close(block(x), x * s[:, :, None, None])
    assert e.fc1.bias is None and e.fc2.bias is None  # FcaNet's FCs have no biases
    assert sum(p.numel() for p in block.parameters()) == 2 * c * (c // r)
    assert "squeeze.basis" not in block.state_dict()  # derived from the options, not stored


def test_fca_dc_component_is_a_scaled_average_and_any_size_works() -> None:
    block = FCABlock(16, frequencies=[(0, 0)]).double()
    x = randn(2, 16, 7, 7)
    with torch.no_grad():
        close(block.squeeze(x), x.mean(dim=(2, 3)) * 7)  # orthonormal DC basis: 1/7 everywhere, sum = 7 * mean
        for h, w in [(32, 32), (8, 8), (4, 4), (5, 11), (1, 1)]:
            assert block(randn(2, 16, h, w)).shape == (2, 16, h, w)
    assert dct_frequencies("low4") == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(ValueError, match="'top', 'low' or 'bot' followed by a count"):
        FCABlock(16, frequencies="top64")
    with pytest.raises(ValueError, match=r"0 <= u, v <= 6"):
        FCABlock(16, frequencies=[(0, 7)])
    with pytest.raises(ValueError, match="16 DCT frequencies need at least as many channels"):
        FCABlock(8)
    # channels not divisible by the number of frequencies: groups as even as possible (2, 2, 1)
    uneven = FCABlock(5, frequencies=[(0, 0), (0, 1), (1, 0)]).double()
    basis = uneven.squeeze.basis.double()
    for ch, f in enumerate([(0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]):
        torch.testing.assert_close(basis[ch], dct_basis(*f), rtol=1e-6, atol=1e-7)


# --- NoSqueeze -------------------------------------------------------------------------------------------------------
def test_nosqueeze_matches_the_equation() -> None:
    c, r = 16, 4
    block = randomise(NoSqueezeBlock(c, reduction=r))
    x = randn(2, c, 5, 3)
    e = block.excitation
    w1, b1 = e.conv1.weight[:, :, 0, 0], e.conv1.bias
    w2, b2 = e.conv2.weight[:, :, 0, 0], e.conv2.bias
    # the two FCs of SE, applied at every position instead of to the pooled vector
    hid = torch.relu(torch.einsum("dc,bchw->bdhw", w1, x) + b1[:, None, None])
    s = torch.sigmoid(torch.einsum("cd,bdhw->bchw", w2, hid) + b2[:, None, None])
    with torch.no_grad():
        close(block.excitation(x), s)
        close(block(x), x * s)
    assert not hasattr(block, "squeeze")
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for p in SEBlock(c, r).parameters())


def test_every_module_keeps_the_shape_and_names_its_steps() -> None:
    x = torch.randn(2, 64, 6, 5)
    for name, cls in ATTENTIONS.items():
        block = cls(64).eval()
        assert block.channels == 64
        assert isinstance(block.excitation, nn.Module) and isinstance(block.scale, nn.Module)
        with torch.no_grad():
            assert block(x).shape == x.shape, name
            bn = nn.BatchNorm2d(64).eval()
            torch.testing.assert_close(block.forward_after_batchnorm(x, bn), block(bn(x)))
        assert block.neutral == (0.0 if name == "gc" else 1.0)


# --- config and registry ---------------------------------------------------------------------------------------------
def test_config_field_round_trip_and_default() -> None:
    cfg = get_config("se_resnet56", attention="eca")
    assert cfg.attention == "eca" and SEResNetConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["attention"] == "eca"
    se = get_config("se_resnet20")
    assert se.attention == "se"
    # SE configs are written as before the field existed (checkpoint metadata unchanged) and read back the same
    assert "attention" not in se.to_dict() and SEResNetConfig.from_dict(se.to_dict()) == se
    assert all(type(m) is SEBlock for m in create_model("se_resnet20").se_blocks().values())


def test_ge_extent_is_a_config_option_of_ge_only() -> None:
    """GE's gather extent through the config: global by default (then GE is SE-Var1, the same function), a local
    extent gives a gate per position that capture records; other attentions refuse it; configs round-trip."""
    x = torch.randn(2, 3, 32, 32)
    ge, var1 = create_model("ge_resnet20").eval(), create_model("se_var1_resnet20").eval()
    ge.load_state_dict(var1.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ge(x), var1(x))  # GE-theta-minus with the global extent is SE-Var1
    local = create_model("ge_resnet20", ge_extent=2).eval()
    assert {b.squeeze.extent for b in local.se_blocks().values()} == {2}
    with torch.no_grad(), capture(local, "SE_3_1") as cap:
        local(x)
    assert cap.excitation["SE_3_1"].shape == (2, 32, 16, 16)  # one gate per channel and position
    cfg = local.config
    assert cfg.to_dict()["ge_extent"] == 2 and SEResNetConfig.from_dict(cfg.to_dict()) == cfg
    assert "ge_extent" not in get_config("ge_resnet20").to_dict()  # configs without it are written as before
    with pytest.raises(ValueError, match="ge_extent is Gather-Excite's gather extent and needs attention='ge'"):
        get_config("se_resnet20", ge_extent=2)
    with pytest.raises(ValueError, match="ge_extent must be an integer >= 2, got 1"):
        get_config("ge_resnet20", ge_extent=1)


def test_registered_names() -> None:
    names = list_models()
    for a in NON_SE:
        for depth in (20, 32, 44, 56, 110, 164, 18, 50):
            assert f"{a}_resnet{depth}" in names
        cfg = get_config(f"{a}_resnet56")
        assert cfg == get_config("se_resnet56", attention=a) and cfg.num_classes == 10 and cfg.layers == (9, 9, 9)
        assert all(type(m) is ATTENTIONS[a] for m in create_model(f"{a}_resnet20").se_blocks().values())
    assert list_models("eca_resnet*")[:3] == ["eca_resnet18", "eca_resnet20", "eca_resnet32"]
    # the SE family's own listing is unchanged
    assert list_models("se_resnet1*") == ["se_resnet18", "se_resnet101", "se_resnet110", "se_resnet152",
                                          "se_resnet164"]


@pytest.mark.parametrize(("overrides", "match"), [
    ({"attention": "sk"}, r"attention must be one of \('se', 'eca', 'se_var1', 'se_var2', 'se_var3', 'ge', 'gc', "
                          r"'cbam', 'fca', 'nosqueeze'\), got 'sk'"),
    ({"attention": None}, "attention must be one of"),
    ({"attention": "gc", "gate": "tanh"}, r"attention 'gc' does not use gate \(it uses reduction, min_hidden\); "
                                          r"leave gate at its default 'sigmoid', got 'tanh'"),
    ({"attention": "eca", "reduction": 8}, "attention 'eca' does not use reduction"),
    ({"attention": "cbam", "squeeze": "max"}, "attention 'cbam' does not use squeeze"),
    ({"attention": "ge", "se_min_hidden": 4}, "attention 'ge' does not use se_min_hidden"),
])
def test_bad_attention_config_is_a_clear_error(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_config("se_resnet20", **overrides)


def test_options_each_module_uses_reach_it() -> None:
    assert get_config("se_resnet20", attention="gc", reduction=4).reduction == 4
    assert create_model("se_resnet20", attention="gc", reduction=4).se_blocks()["SE_4_1"].hidden == 16
    assert create_model("se_resnet20", attention="cbam", gate="tanh").se_blocks()["SE_2_1"].excitation.gate.__class__ \
        is nn.Tanh
    assert create_model("se_resnet20", attention="eca", squeeze="max").se_blocks()["SE_2_1"].squeeze.mode == "max"
    assert set(ATTENTION_OPTIONS) == set(ATTENTIONS)
    assert build_attention(64, "eca", kernel_size=5).kernel_size == 5
    assert isinstance(build_attention(64, "se", reduction=8), SEBlock)


# --- counting --------------------------------------------------------------------------------------------------------
# se_resnet20 at 32x32: three units per stage with C = 16, 32, 64 channels on 32x32, 16x16, 8x8 maps
STAGES = [(16, 32 * 32), (32, 16 * 16), (64, 8 * 8)]


def hand_counts(attention: str) -> tuple[int, int]:
    """(parameters, multiply-adds) the attention modules add to resnet20, from each module's formula. Multiply-adds
    are the ones FlopCounterMode counts (convolutions and matrix products, not elementwise products or pooling)."""
    params = macs = 0
    for c, hw in STAGES:
        h = max(c // 16, 1)
        k = nearest_odd(abs(math.log2(c) / 2 + 1 / 2))
        p, m = {
            "se": (2 * c * h + h + c, 2 * c * h),
            "eca": (k, c * k),  # the 1-D conv: k weights, k multiply-adds per channel
            "se_var1": (0, 0),
            "se_var2": (c, 0),  # w * z is elementwise
            "se_var3": (c * c, c * c),
            "ge": (0, 0),
            # W_k (1x1 conv C -> 1) and the weighted sum: C * HW each; FCs with hidden max(C // 16, 2); LayerNorm 2h
            "gc": ((c + 1) + 2 * c * max(h, 2) + max(h, 2) + c + 2 * max(h, 2), 2 * c * hw + 2 * c * max(h, 2)),
            # shared MLP (no bias) on two vectors; 7x7 conv 2 -> 1 at every position; BN weight and bias
            "cbam": (2 * c * h + 2 * 49 + 2, 2 * 2 * c * h + 2 * 49 * hw),
            # DCT weighting of the 7x7 pooled map: 49 per channel; FCs without bias
            "fca": (2 * c * h, 49 * c + 2 * c * h),
            "nosqueeze": (2 * c * h + h + c, 2 * c * h * hw),  # SE's FCs as 1x1 convs at every position
        }[attention]
        params, macs = params + 3 * p, macs + 3 * m
    return params, macs


@pytest.mark.parametrize("attention", ALL)
def test_param_and_mac_counts_match_hand_computation(attention: str) -> None:
    plain = create_model("resnet20")
    m = create_model("se_resnet20", attention=attention)
    params, macs = hand_counts(attention)
    assert count_params(m) - count_params(plain) == params
    assert count_macs(m) - count_macs(plain) == macs


def test_counted_overheads_are_the_ones_the_papers_discuss() -> None:
    """ECA's 1-D conv and CBAM's 7x7 conv are counted (not invisible to FlopCounterMode), and a second example size:
    one block on a 10x10 map."""
    from torch.utils.flop_counter import FlopCounterMode

    def macs(block: nn.Module, x: torch.Tensor) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            block.eval()(x)
        return counter.get_total_flops() // 2

    x = torch.zeros(1, 256, 10, 10)
    assert macs(ECABlock(256), x) == 256 * 5
    assert macs(CBAMBlock(256), x) == 2 * 2 * 256 * 16 + 2 * 49 * 100
    assert macs(GCBlock(256), x) == 2 * 256 * 100 + 2 * 256 * 16
    assert macs(NoSqueezeBlock(256), x) == 2 * 256 * 16 * 100


# --- model forward / backward ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("integration", ["standard", "pre", "post", "identity", "3x3"])
@pytest.mark.parametrize("attention", NON_SE)
def test_forward_backward_bottleneck_every_integration(attention: str, integration: str) -> None:
    torch.manual_seed(0)
    m = create_model("se_resnet164", depth=11, attention=attention, integration=integration).train()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    blocks = m.se_blocks()
    expected = 64 if integration != "3x3" else 16  # bottleneck output 4 x 16 or the 3x3 conv's 16 channels
    assert blocks["SE_2_1"].channels == (16 if integration == "pre" else expected)
    params = [p for se in blocks.values() for p in se.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    if params:
        assert any(p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("attention", ALL)
def test_forward_backward_basic_blocks(attention: str) -> None:
    torch.manual_seed(0)
    m = create_model("se_resnet20", attention=attention).train()
    x = torch.randn(2, 3, 32, 32)
    logits = m(x)
    logits.logsumexp(1).sum().backward()
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    params = [p for se in m.se_blocks().values() for p in se.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_imagenet_depth_with_an_attention() -> None:
    m = create_model("cbam_resnet50", num_classes=5).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert m.se_blocks()["SE_5_3"].channels == 2048


# --- hooks -----------------------------------------------------------------------------------------------------------
def applied(attention: str, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """What the block's fusion does with its gate: a product (per channel or per value), or GC's sum."""
    if attention == "gc":
        return u + s[:, :, None, None]
    return u * (s[:, :, None, None] if s.ndim == 2 else s)


@pytest.mark.parametrize("attention", ALL)
def test_capture_records_the_gate_each_block_applies(attention: str) -> None:
    m = model(attention=attention)
    x = torch.randn(3, 3, 32, 32)
    spatial = attention == "cbam"
    with torch.no_grad(), capture(m, features=True, spatial=spatial) as cap:
        m(x)
    assert cap.blocks == [f"SE_{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3)]
    for name, se in m.se_blocks().items():
        s, u = cap.excitation[name], cap.inputs[name]
        c = se.channels
        assert s.shape == ((3, c, *u.shape[2:]) if attention == "nosqueeze" else (3, c))
        refined = applied(attention, u, s)
        if spatial:
            assert cap.spatial[name].shape == (3, 1, *u.shape[2:])
            refined = refined * cap.spatial[name]
        torch.testing.assert_close(cap.outputs[name], refined, rtol=1e-5, atol=1e-5)
        if attention != "gc":
            assert s.min() >= 0 and s.max() <= 1  # sigmoid gates
    squeeze = cap.squeeze["SE_3_1"]
    assert squeeze.shape == {"cbam": (3, 2, 32), "nosqueeze": (3, 32, 16, 16)}.get(attention, (3, 32))


@pytest.mark.parametrize("attention", ALL)
def test_off_on_every_block_equals_the_plain_resnet(attention: str) -> None:
    """Off() sets each gate to its neutral value (0 for GC's added context): the same as removing the blocks."""
    m = model(attention=attention)
    plain = create_model("resnet20").eval()
    missing, unexpected = plain.load_state_dict(m.state_dict(), strict=False)
    assert not missing and all(".se." in k for k in unexpected)  # (none for the parameter-free modules)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
        spatial_off = steer(m, {"SE_*": Off()}, gate="spatial") if attention == "cbam" else contextlib.nullcontext()
        with steer(m, {"SE_*": Off()}), spatial_off:
            off = m(x)
        ref = plain(x)
        assert torch.equal(m(x), before)
    torch.testing.assert_close(off, ref, rtol=0, atol=0)
    assert not torch.allclose(before, off)  # the modules did change the network's output


def test_gc_off_equals_removing_the_block() -> None:
    m = model(attention="gc")
    removed = copy.deepcopy(m)
    unit = removed.layer2[1]
    unit.se, unit.integration = None, "none"  # the unit without its GC block
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        with steer(m, {"SE_3_2": Off()}), capture(m, "SE_3_2") as cap:
            off = m(x)
        torch.testing.assert_close(off, removed(x), rtol=0, atol=0)
        assert torch.equal(cap.excitation["SE_3_2"], torch.zeros(3, 32)) and cap.steered
        # Constant(0) is the same edit for GC; Constant(1) is not neutral there
        with steer(m, {"SE_3_2": Constant(0.0)}):
            torch.testing.assert_close(m(x), off, rtol=0, atol=0)
        with steer(m, {"SE_3_2": Constant(1.0)}):
            assert not torch.allclose(m(x), off)


@pytest.mark.parametrize("attention", ALL)
def test_scale_and_constant_edit_the_gate(attention: str) -> None:
    m = model(attention=attention)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        with capture(m, "SE_3_1") as base:
            before = m(x)
        with steer(m, {"SE_3_1": Scale(2.0, channels=[0, 5])}), capture(m, "SE_3_1") as cap:
            scaled = m(x)
        s0, s1 = base.excitation["SE_3_1"], cap.excitation["SE_3_1"]
        torch.testing.assert_close(s1[:, [0, 5]], 2 * s0[:, [0, 5]])
        keep = [c for c in range(32) if c not in (0, 5)]
        torch.testing.assert_close(s1[:, keep], s0[:, keep])
        assert not torch.allclose(scaled, before)
        with steer(m, {"SE_3_1": Constant(0.25, channels=3)}), capture(m, "SE_3_1") as cap:
            m(x)
        assert torch.equal(cap.excitation["SE_3_1"][:, 3], torch.full_like(s0[:, 3], 0.25))
        torch.testing.assert_close(cap.excitation["SE_3_1"][:, 4], s0[:, 4])
        with steer(m, {"SE_3_1": Scale(1.0)}):
            assert torch.equal(m(x), before)


def test_replace_edits_on_a_spatial_gate() -> None:
    m = model(attention="nosqueeze")
    x = torch.randn(2, 3, 32, 32)
    vec = torch.linspace(0.1, 0.9, 16)
    rows = torch.rand(2, 16)
    with torch.no_grad():
        with steer(m, {"SE_2_1": Replace(vec)}), capture(m, "SE_2_1") as cap:
            m(x)
        s = cap.excitation["SE_2_1"]
        assert s.shape == (2, 16, 32, 32)
        assert torch.equal(s, vec[None, :, None, None].expand_as(s))
        with steer(m, {"SE_2_1": ReplaceRows(rows)}), capture(m, "SE_2_1") as cap:
            m(x)
        assert torch.equal(cap.excitation["SE_2_1"], rows[:, :, None, None].expand(2, 16, 32, 32))


def test_cbam_spatial_gate_capture_and_steer() -> None:
    m = model(attention="cbam")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with capture(m, "SE_4_*", spatial=True) as cap:
            before = m(x)
        ms = cap.spatial["SE_4_2"]
        assert ms.shape == (2, 1, 8, 8) and 0 < ms.min() and ms.max() < 1 and not cap.steered
        with steer(m, {"SE_4_2": Off()}, gate="spatial"), capture(m, "SE_4_2", spatial=True) as cap:
            off = m(x)
        assert torch.equal(cap.spatial["SE_4_2"], torch.ones(2, 1, 8, 8)) and cap.steered
        assert not torch.allclose(off, before)
        # the channel gate was left alone by the spatial edit
        with capture(m, "SE_4_2") as base:
            m(x)
        torch.testing.assert_close(cap.excitation["SE_4_2"], base.excitation["SE_4_2"])
        with steer(m, {"SE_4_2": Scale(0.5)}, gate="spatial"), capture(m, "SE_4_2", spatial=True) as cap2:
            m(x)
        torch.testing.assert_close(cap2.spatial["SE_4_2"], 0.5 * ms)
    with pytest.raises(ValueError, match="out of range for SE_4_2, which has 1 channels"):
        steer(m, {"SE_4_2": Scale(2.0, channels=[3])}, gate="spatial")
    se = model()
    with pytest.raises(ValueError, match=r"have no spatial gate; only CBAM blocks \(attention='cbam'\) do"):
        capture(se, spatial=True)
    with pytest.raises(ValueError, match="have no spatial gate"):
        steer(se, {"SE_2_1": Off()}, gate="spatial")
    with pytest.raises(ValueError, match="gate must be 'channel'"):
        steer(se, {"SE_2_1": Off()}, gate="both")
    with capture(se) as cap:
        pass
    with pytest.raises(RuntimeError, match="spatial gates were not recorded"):
        _ = cap.spatial


def test_empty_capture_shapes() -> None:
    for attention, squeeze, excitation in [("cbam", (0, 2, 16), (0, 16)), ("nosqueeze", (0, 16, 0, 0), (0, 16, 0, 0)),
                                           ("eca", (0, 16), (0, 16))]:
        with capture(model(attention=attention), "SE_2_1") as cap:
            pass
        assert cap.squeeze["SE_2_1"].shape == squeeze and cap.excitation["SE_2_1"].shape == excitation


@pytest.mark.parametrize("attention", ["eca", "gc", "cbam", "nosqueeze"])
def test_excitation_stats_accept_every_gate(attention: str) -> None:
    m = model(attention=attention)
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 1])) for _ in range(2)]
    stats = excitation_stats(m, batches, num_classes=3)
    assert stats.num_images == 8 and stats.block_names == list(m.se_blocks())
    # the same numbers from all captured gates at once; (B, C, H, W) gates averaged over positions per image
    with torch.no_grad(), capture(m, dtype=torch.float64) as cap:
        for images, _ in batches:
            m(images)
    labels = torch.cat([lab for _, lab in batches])
    for name in stats.block_names:
        s = cap.excitation[name]
        s = s.mean(dim=(2, 3)) if s.ndim == 4 else s
        assert s.shape == (8, m.se_blocks()[name].channels)
        torch.testing.assert_close(stats.mean[name][1], s[labels == 1].mean(0))
        torch.testing.assert_close(stats.overall_std[name], s.std(0, correction=0))


def test_excitation_stats_update_reduces_a_spatial_gate() -> None:
    stats = ExcitationStats(["b"], [2], num_classes=1)
    s = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.5]]]])  # (1, 2, 1, 2): channel means 0.5 and 0.5
    stats.update({"b": s}, torch.tensor([0]))
    torch.testing.assert_close(stats.mean["b"], torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"s of b must have shape \(1, 2\)"):
        stats.update({"b": torch.zeros(1, 3, 2, 2)}, torch.tensor([0]))


def test_gc_model_starts_as_the_plain_resnet() -> None:
    torch.manual_seed(0)
    m = create_model("gc_resnet20").eval()
    plain = create_model("resnet20").eval()
    plain.load_state_dict(m.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), plain(x), rtol=0, atol=0)


def test_gate_history_refuses_other_attention_modules() -> None:
    from seresnet.gate_history import record_gate_history

    m = create_model("eca_resnet20")
    images, labels = torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="the gate history follows SE blocks .* this model has ECABlock"):
        record_gate_history(m, [(1, m.state_dict())], images, labels)
