"""The SE block against a hand-written computation of the paper's equations (section 3)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import GATE_FNS, assert_float64_close, longest_reduction

from seresnet.se import GATES, SQUEEZE_MODES, SEBlock, se_hidden_width


def manual_se(block: SEBlock, x: torch.Tensor, squeeze: str, gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """z = pool(x); s = gate(W2 relu(W1 z + b1) + b2); return (x * s, s), written out with plain tensor ops."""
    z = x.mean(dim=(2, 3)) if squeeze == "avg" else x.flatten(2).max(dim=2).values
    fc1, fc2 = block.excitation.fc1, block.excitation.fc2
    h = torch.clamp(z @ fc1.weight.T + fc1.bias, min=0)
    s = GATE_FNS[gate](h @ fc2.weight.T + fc2.bias)
    return x * s[:, :, None, None], s


def randomise(block: SEBlock) -> None:
    """Larger-than-default weights and non-zero biases so that the gate is not near a constant."""
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)


def test_gate_table_covers_the_manual_gates() -> None:
    assert set(GATES) == set(GATE_FNS)
    assert set(SQUEEZE_MODES) == {"avg", "max"}


@pytest.mark.parametrize("squeeze", ["avg", "max"])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid", "tanh", "relu"])
def test_matches_manual_computation(squeeze: str, gate: str) -> None:
    torch.manual_seed(0)
    block = SEBlock(32, reduction=4, squeeze=squeeze, gate=gate).eval()
    randomise(block)
    x = torch.randn(2, 32, 5, 7)
    expected, s_expected = manual_se(block, x, squeeze, gate)
    with torch.no_grad():
        out = block(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # the gate is doing something: outputs are not just the input
    assert not torch.allclose(s_expected, torch.ones_like(s_expected))


def test_avg_and_max_squeeze_differ() -> None:
    torch.manual_seed(1)
    avg = SEBlock(16, reduction=4, squeeze="avg")
    mx = SEBlock(16, reduction=4, squeeze="max")
    mx.load_state_dict(avg.state_dict())
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(avg.squeeze(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(mx.squeeze(x), x.amax(dim=(2, 3)))
    assert not torch.allclose(avg(x), mx(x))


@pytest.mark.parametrize(
    ("channels", "reduction", "min_hidden", "hidden"),
    [(64, 16, 1, 4), (256, 16, 1, 16), (2048, 16, 1, 128), (16, 16, 1, 1), (32, 16, 1, 2),
     (8, 16, 1, 1), (64, 16, 8, 8), (256, 16, 8, 16), (100, 8, 1, 12), (64, 1, 1, 64)],
)
def test_hidden_width(channels: int, reduction: int, min_hidden: int, hidden: int) -> None:
    assert se_hidden_width(channels, reduction, min_hidden) == hidden
    block = SEBlock(channels, reduction=reduction, min_hidden=min_hidden)
    assert block.hidden == hidden
    assert block.excitation.fc1.weight.shape == (hidden, channels)
    assert block.excitation.fc2.weight.shape == (channels, hidden)
    assert block.excitation.fc1.bias is not None and block.excitation.fc2.bias is not None


def test_parameter_count_and_no_bias() -> None:
    c, r = 256, 16
    assert sum(p.numel() for p in SEBlock(c, r).parameters()) == 2 * c * (c // r) + c // r + c
    assert sum(p.numel() for p in SEBlock(c, r, bias=False).parameters()) == 2 * c * (c // r)


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid", "tanh", "relu"])
def test_hooks_see_descriptor_and_weights(gate: str) -> None:
    torch.manual_seed(2)
    block = SEBlock(24, reduction=4, gate=gate).eval()
    randomise(block)
    seen: dict[str, torch.Tensor] = {}
    h1 = block.squeeze.register_forward_hook(lambda m, i, o: seen.__setitem__("z", o.detach().clone()))
    h2 = block.excitation.register_forward_hook(lambda m, i, o: seen.__setitem__("s", o.detach().clone()))
    x = torch.randn(3, 24, 6, 6)
    with torch.no_grad():
        out = block(x)
    h1.remove()
    h2.remove()
    assert seen["z"].shape == (3, 24)
    torch.testing.assert_close(seen["z"], x.mean(dim=(2, 3)))
    assert seen["s"].shape == (3, 24)
    _, s_expected = manual_se(block, x, "avg", gate)
    torch.testing.assert_close(seen["s"], s_expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, x * seen["s"][:, :, None, None])
    if gate in ("sigmoid", "hard_sigmoid"):
        assert seen["s"].min() >= 0 and seen["s"].max() <= 1
    if gate == "tanh":
        assert seen["s"].min() >= -1 and seen["s"].max() <= 1


def test_sigmoid_gate_stays_in_unit_interval_for_extreme_inputs() -> None:
    block = SEBlock(8, reduction=2)
    s = block.excitation(torch.tensor([[1e4] * 4 + [-1e4] * 4]))
    assert ((s >= 0) & (s <= 1)).all()


def test_channel_scale_broadcasts_per_channel() -> None:
    block = SEBlock(4, reduction=2)
    x = torch.ones(1, 4, 2, 3)
    s = torch.tensor([[0.0, 0.5, 1.0, 2.0]])
    out = block.scale(x, s)
    for c in range(4):
        assert torch.all(out[0, c] == s[0, c])


def test_gradients_reach_both_fc_layers() -> None:
    torch.manual_seed(3)
    block = SEBlock(16, reduction=4)
    block(torch.randn(2, 16, 3, 3)).square().sum().backward()
    for p in block.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_matches_functional_conv_formulation() -> None:
    """The official release uses 1x1 convs on a (B, C, 1, 1) map; same numbers as the linear layers."""
    torch.manual_seed(4)
    block = SEBlock(32, reduction=8)
    randomise(block)
    x = torch.randn(2, 32, 4, 4)
    fc1, fc2 = block.excitation.fc1, block.excitation.fc2
    pooled = F.adaptive_avg_pool2d(x, 1)
    s = torch.sigmoid(F.conv2d(F.relu(F.conv2d(pooled, fc1.weight[:, :, None, None], fc1.bias)),
                               fc2.weight[:, :, None, None], fc2.bias))
    torch.testing.assert_close(block(x), x * s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", [0, -1, 1.5, True, "16", None])
def test_invalid_reduction(reduction: object) -> None:
    with pytest.raises(ValueError, match="reduction ratio must be a positive integer"):
        SEBlock(64, reduction=reduction)  # type: ignore[arg-type]


@pytest.mark.parametrize("min_hidden", [0, -2, 2.0, False])
def test_invalid_min_hidden(min_hidden: object) -> None:
    with pytest.raises(ValueError, match="min_hidden must be a positive integer"):
        SEBlock(64, min_hidden=min_hidden)  # type: ignore[arg-type]


def test_invalid_channels() -> None:
    with pytest.raises(ValueError, match="channels must be positive"):
        SEBlock(0)


@pytest.mark.parametrize("shape", [(2, 32, 4, 4), (2, 64), (64, 4, 4)])
def test_wrong_input_shape_is_named(shape: tuple[int, ...]) -> None:
    # it used to surface as a matmul error ("mat1 and mat2 shapes cannot be multiplied") or an IndexError
    expected = f"SEBlock(64) expects a (B, 64, H, W) feature map, got shape {shape}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        SEBlock(64)(torch.randn(*shape))


@pytest.mark.parametrize("gate", ["softmax", "Sigmoid", ""])
def test_unknown_gate(gate: str) -> None:
    with pytest.raises(ValueError, match=r"gate must be one of \('sigmoid'"):
        SEBlock(64, gate=gate)  # type: ignore[arg-type]


@pytest.mark.parametrize("squeeze", ["mean", "AVG", "min"])
def test_unknown_squeeze(squeeze: str) -> None:
    with pytest.raises(ValueError, match=r"squeeze must be one of \('avg', 'max'\)"):
        SEBlock(64, squeeze=squeeze)  # type: ignore[arg-type]


# --- the fused training path (_FusedSE) -------------------------------------------------------------------------
def _outputs_and_grads(model: torch.nn.Module, x: torch.Tensor, fused: bool) -> tuple[torch.Tensor, ...]:
    for se in model.se_blocks().values():
        se.fused = fused
    model.zero_grad()
    xg = x.clone().requires_grad_()
    out = model(xg)
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
    return (out.detach(), xg.grad, *(p.grad for p in model.parameters()))


@pytest.mark.parametrize("name,overrides", [("se_resnet20", {}), ("se_resnet20", {"integration": "pre"}),
                                            ("se_resnet20", {"integration": "identity"}),
                                            ("se_resnet50", {"input_size": 32, "num_classes": 10})])
def test_fused_training_path_matches_the_modules(name: str, overrides: dict) -> None:
    from seresnet import create_model

    torch.manual_seed(0)
    model = create_model(name, **overrides).double().train()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    layers, terms = longest_reduction(model, x)
    fused = _outputs_and_grads(model, x, True)
    modular = _outputs_and_grads(model, x, False)
    assert len(fused) == len(modular)
    for a, b in zip(fused, modular):
        assert a is not None and b is not None
        assert_float64_close(a, b, layers, terms)


def test_fused_path_runs_only_when_training_in_eager_mode() -> None:
    se = SEBlock(32, reduction=4)
    x = torch.randn(2, 32, 5, 5, requires_grad=True)
    assert type(se(x).grad_fn).__name__ == "_FusedSEBackward"
    with torch.no_grad():
        assert se(x).grad_fn is None
    assert type(se(x.detach()).grad_fn).__name__ != "_FusedSEBackward"  # input needs no gradient
    assert type(SEBlock(32, reduction=4, squeeze="max")(x).grad_fn).__name__ != "_FusedSEBackward"
    se.fused = False
    assert type(se(x).grad_fn).__name__ != "_FusedSEBackward"


def test_hooks_on_bypassed_modules_switch_to_the_module_path() -> None:
    se = SEBlock(16, reduction=4)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    seen: list[torch.Tensor] = []
    handle = se.squeeze.register_forward_hook(lambda m, a, out: seen.append(out))
    y = se(x)
    handle.remove()
    assert len(seen) == 1 and type(y.grad_fn).__name__ != "_FusedSEBackward"
    # hooks on the excitation (capture, steering) keep the fused path: the excitation still runs as a module
    handle = se.excitation.register_forward_hook(lambda m, a, out: out * 0.5)
    y = se(x)
    handle.remove()
    assert type(y.grad_fn).__name__ == "_FusedSEBackward"
    se.fused = False
    handle = se.excitation.register_forward_hook(lambda m, a, out: out * 0.5)
    torch.testing.assert_close(se(x), y)


@pytest.mark.parametrize("edit", ["scale", "constant", "off"])
def test_fused_path_with_steering_matches_the_modules(edit: str) -> None:
    from seresnet import create_model
    from seresnet.hooks import Constant, Off, Scale, steer

    torch.manual_seed(1)
    model = create_model("se_resnet20").double().train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    e = {"scale": Scale(0.5, channels=[0, 3]), "constant": Constant(0.2), "off": Off()}[edit]
    layers, terms = longest_reduction(model, x)
    with steer(model, {"SE_3_*": e}):
        fused = _outputs_and_grads(model, x, True)
        modular = _outputs_and_grads(model, x, False)
    for a, b in zip(fused, modular):
        if b is None:  # an excitation switched off entirely gets no gradient on either path
            assert a is None or not a.any()
            continue
        assert_float64_close(a, b, layers, terms)


def test_fused_gradient_keeps_channels_last_in_bfloat16() -> None:
    se = SEBlock(32, reduction=4)
    x = torch.randn(4, 32, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = se(x.to(torch.bfloat16))
    y.float().square().sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert se.excitation.fc1.weight.grad is not None and torch.isfinite(se.excitation.fc1.weight.grad).all()


def test_second_derivatives_need_the_module_path() -> None:
    se = SEBlock(8, reduction=2)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    (g,) = torch.autograd.grad(se(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
    se.fused = False
    (g,) = torch.autograd.grad(se(x).square().sum(), x, create_graph=True)
    g.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --- the compiled training path (batchnorm_then_se: the squeeze from the BN's statistics) -----------------------
def _training_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output, input gradient, every parameter gradient and every buffer after one training forward/backward."""
    model.zero_grad()
    xg = x.clone().requires_grad_()
    out = model(xg)
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
    return (out.detach(), xg.grad, *(p.grad for p in model.parameters()), *model.buffers())


def _randomise_bns(model: torch.nn.Module) -> None:
    """BN scales and shifts away from 1 and 0, so that a mistake in the affine algebra shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


@pytest.mark.parametrize("name,overrides", [("se_resnet20", {}), ("se_resnet20", {"gate": "tanh", "reduction": 4}),
                                            ("se_resnet50", {"input_size": 64, "num_classes": 10}),
                                            ("se_resnet50", {"stride_on": "1x1", "num_classes": 10})])
def test_batchnorm_squeeze_path_matches_the_modules(name: str, overrides: dict, monkeypatch) -> None:
    import copy

    import seresnet.se as se_mod
    from seresnet import create_model

    torch.manual_seed(0)
    model = create_model(name, **overrides).double().train()
    _randomise_bns(model)
    folded = copy.deepcopy(model)
    size = 32 if name == "se_resnet20" else 64  # 2x2 maps in the last stage: BN statistics of 12 values, not 3
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    layers, terms = longest_reduction(model, x)
    reference = _training_step(model, x)  # eager: bn, then the SE block
    calls = []
    original = se_mod.batchnorm_then_se
    monkeypatch.setattr(se_mod, "batchnorm_then_se", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(se_mod, "_compiling", lambda: True)  # the path torch.compile takes, run eagerly
    result = _training_step(folded, x)
    assert len(calls) == len(model.se_blocks())  # every SE block took its squeeze from its BN
    assert len(result) == len(reference)
    for a, b in zip(result, reference):
        assert a is not None and b is not None
        assert_float64_close(a, b, layers, terms)  # gradients and running statistics too


def test_batchnorm_squeeze_path_only_where_it_gives_the_same_answer(monkeypatch) -> None:
    import seresnet.se as se_mod
    from seresnet import create_model
    from seresnet.hooks import capture

    calls = []
    original = se_mod.batchnorm_then_se
    monkeypatch.setattr(se_mod, "batchnorm_then_se", lambda *a: calls.append(1) or original(*a))
    x = torch.randn(2, 3, 32, 32)
    model = create_model("se_resnet20").train()
    model(x)
    assert not calls  # eager mode: bn, then the SE block (the eager fused path)
    monkeypatch.setattr(se_mod, "_compiling", lambda: True)
    with capture(model, "SE_4_3") as cap:  # excitation hooks see z and s on this path too
        model(x)
    assert len(calls) == 9 and cap.squeeze["SE_4_3"].shape == (2, 64)
    calls.clear()
    with capture(model, "SE_4_3", features=True) as cap:  # a hook on the SE block needs U = bn(x): module path
        model(x)
    assert len(calls) == 8 and cap.inputs["SE_4_3"].shape == (2, 64, 8, 8)
    calls.clear()
    handle = model.get_submodule("layer3.2.bn2").register_forward_hook(lambda m, a, out: None)
    model(x)  # a hook on the BN must see it run
    handle.remove()
    assert len(calls) == 8
    calls.clear()
    model.eval()(x)  # BN with running statistics: nothing to fold
    for se in model.se_blocks().values():
        se.fused = False
    model.train()(x)
    basic_relu = create_model("se_resnet20", basic_branch_relu=True).train()  # a ReLU between BN and SE
    basic_relu(x)
    assert not calls


def test_torch_compile_takes_the_batchnorm_squeeze_path() -> None:
    """Under torch.compile (dynamo tracing; the graphs run eagerly here, so no C++ compiler is needed) the traced
    model takes the squeeze from each SE block's BN (one ``var_mean`` per block) and trains to the same values."""
    import copy

    from seresnet import create_model

    torch.manual_seed(0)
    model = create_model("se_resnet20").double().train()
    _randomise_bns(model)
    compiled_copy = copy.deepcopy(model)
    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(compiled_copy, backend=record)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    layers, terms = longest_reduction(model, x)
    result = _training_step(compiled, x)
    reference = _training_step(model, x)
    torch._dynamo.reset()
    var_means = [n for g in graphs for n in g.graph.nodes if n.target in (torch.var_mean, "var_mean")]
    assert len(var_means) == len(model.se_blocks()) == 9
    for a, b in zip(result, reference):
        assert_float64_close(a, b, layers, terms)


@pytest.mark.slow
def test_inductor_compiled_training_step_matches_eager() -> None:
    """The real compiler (inductor, C++ code) on the batchnorm squeeze path: float32 training step, same values."""
    import copy
    import shutil

    from seresnet import create_model

    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    torch.manual_seed(0)
    model = create_model("se_resnet20", depth=8).train()  # one unit per stage: a quick compile
    _randomise_bns(model)
    compiled_copy = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(compiled_copy)
    x = torch.randn(8, 3, 16, 16)
    result = _training_step(compiled, x)
    reference = _training_step(model, x)
    torch._dynamo.reset()
    for a, b in zip(result, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_batchnorm_squeeze_path_is_as_accurate_in_bfloat16() -> None:
    """bf16 autocast, channels_last, a BN input whose mean is 10x its spread (where a * x + b in bfloat16 would cancel
    digits): the folded path is no less accurate against float64 than bn followed by the SE block."""
    import copy

    from seresnet.se import batchnorm_then_se

    torch.manual_seed(0)
    se, bn = SEBlock(32, reduction=4).train(), torch.nn.BatchNorm2d(32).train()
    randomise(se)
    x = (10 + torch.randn(8, 32, 8, 8)).contiguous(memory_format=torch.channels_last)
    xb = x.to(torch.bfloat16)
    exact = copy.deepcopy(se).double()(copy.deepcopy(bn).double()(xb.double()))  # same rounded input, float64
    bn_modules = copy.deepcopy(bn)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        modules = copy.deepcopy(se)(bn_modules(xb))
        folded = batchnorm_then_se(xb, bn, se.excitation)
    assert folded.dtype == modules.dtype == torch.bfloat16
    for stat in (torch.amax, torch.mean):  # (the uncentred a * x + b in bf16: about 3x and 10x the module error)
        err_modules = stat((modules.double() - exact).abs()).item()
        err_folded = stat((folded.double() - exact).abs()).item()
        assert err_folded <= 1.25 * err_modules, (stat.__name__, err_folded, err_modules)
    for ours, theirs in ((bn.running_mean, bn_modules.running_mean), (bn.running_var, bn_modules.running_var)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)  # statistics in float32 on both paths
