"""How the SE gates form during training: excitation statistics per epoch on a fixed probe set of images.

A training run with ``keep_epoch_weights`` (``--keep-epoch-weights``) stores the weights after every epoch;
``record_gate_history`` replays them on a probe set (validation images, never the test set) and keeps, per epoch and
SE block, a few numbers per channel:

* ``class_mean`` (E, K, C): the mean excitation of each class per channel (the paper's Fig. 6 profiles);
* ``spread`` (E, C): the standard deviation of the excitation across images, per channel;
* ``saturated_high`` / ``saturated_low`` (E,): the share of excitations above 0.9 / below 0.1;
* ``dead_hidden`` (E,): hidden ReLU units of the excitation that are zero for every probe image;
* ``specificity`` (E,): the share of the excitation's variance that lies between classes (eta squared, pooled over
  channels); NaN (undefined) when the excitation does not vary at all;
* ``image_independent`` (E,): the excitation no longer depends on the image (its largest spread is below
  ``INDEPENDENT_SPREAD``): every hidden unit dead, or the gate saturated.

Everything is float32 and a few hundred kB for a 30-epoch SE-ResNet-20; ``save`` / ``load`` use safetensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .data import check_class_labels, normalize
from .hooks import capture, se_block_names
from .se import SEBlock

INDEPENDENT_SPREAD = 1e-4  # an excitation that moves less than this across images carries no image information
HIGH, LOW = 0.9, 0.1
FIELDS = ("class_mean", "spread", "saturated_high", "saturated_low", "dead_hidden", "specificity")


@dataclass
class GateHistory:
    """Per-epoch excitation statistics of every SE block (see the module docstring); ``probe`` says on which images."""

    epochs: list[int]
    blocks: list[str]
    hidden: dict[str, int]
    stats: dict[str, dict[str, torch.Tensor]] = field(repr=False)  # block -> field -> tensor with epochs first
    probe: str = ""

    def __getitem__(self, block: str) -> dict[str, torch.Tensor]:
        if block not in self.stats:
            raise KeyError(f"no SE block {block!r}; blocks: {', '.join(self.blocks)}")
        return self.stats[block]

    def image_independent(self, block: str) -> torch.Tensor:
        """(E,) bool: the block's excitation is the same for every probe image at that epoch."""
        return self[block]["spread"].amax(1) < INDEPENDENT_SPREAD

    def health_table(self) -> list[dict[str, object]]:
        """One record per block at the last epoch: dead hidden units, saturation, specificity, and the first epoch
        from which the excitation stayed independent of the image (None if it never did)."""
        rows = []
        for b in self.blocks:
            flat = self.image_independent(b)
            since = None
            for i in range(len(self.epochs) - 1, -1, -1):  # the run of True values that reaches the last epoch
                if not flat[i]:
                    break
                since = self.epochs[i]
            s = self.stats[b]
            rows.append({"block": b, "hidden units": self.hidden[b], "dead at the end": int(s["dead_hidden"][-1]),
                         "image-independent since epoch": since, "saturated > 0.9": float(s["saturated_high"][-1]),
                         "class specificity": float(s["specificity"][-1])})
        return rows

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        tensors = {f"{b}/{k}": v.contiguous() for b in self.blocks for k, v in self.stats[b].items()}
        meta = {"epochs": json.dumps(self.epochs), "blocks": json.dumps(self.blocks),
                "hidden": json.dumps(self.hidden), "probe": self.probe, "format": "seresnet.gate_history/1"}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GateHistory:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != "seresnet.gate_history/1":
                    raise ValueError("not a seresnet gate history (format seresnet.gate_history/1)")
                blocks = json.loads(meta["blocks"])
                stats = {b: {k: f.get_tensor(f"{b}/{k}") for k in FIELDS} for b in blocks}
        except Exception as exc:  # safetensors raises its own error type for a damaged header
            raise ValueError(f"{path} is not a readable gate history: {exc}") from exc
        return cls(json.loads(meta["epochs"]), blocks, json.loads(meta["hidden"]), stats, meta.get("probe", ""))


@torch.no_grad()
def _epoch_stats(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 batch_size: int) -> dict[str, dict[str, torch.Tensor]]:
    blocks = se_block_names(model)
    zs: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    ss: dict[str, list[torch.Tensor]] = {b: [] for b in blocks}
    for start in range(0, images.shape[0], batch_size):
        with capture(model, blocks) as cap:
            model(normalize(images[start:start + batch_size]))
        for b in blocks:
            zs[b].append(cap.squeeze[b].float())
            ss[b].append(cap.excitation[b].float())
    se_modules = model.se_blocks()
    onehot = nn.functional.one_hot(labels, num_classes).double()  # (N, K)
    counts = onehot.sum(0)
    out = {}
    for b in blocks:
        s = torch.cat(ss[b]).double()  # (N, C)
        z = torch.cat(zs[b])
        fc1 = se_modules[b].excitation.fc1
        hidden = torch.relu(nn.functional.linear(z, fc1.weight.float(), fc1.bias.float() if fc1.bias is not None
                                                 else None))
        class_mean = (onehot.T @ s) / counts.clamp(min=1)[:, None]  # (K, C)
        total = s.var(0, correction=0)  # (C,)
        between = ((class_mean - s.mean(0)) ** 2 * (counts / counts.sum())[:, None]).sum(0)
        total_sum = float(total.sum())
        class_mean[counts == 0] = float("nan")  # a class absent from the probe has no mean, not a mean of 0
        out[b] = {
            "class_mean": class_mean.float(),
            "spread": total.sqrt().float(),
            "saturated_high": torch.tensor((s > HIGH).double().mean().item()),
            "saturated_low": torch.tensor((s < LOW).double().mean().item()),
            "dead_hidden": torch.tensor(float((hidden.amax(0) <= 0).sum())),
            "specificity": torch.tensor(float(between.sum()) / total_sum if total_sum > 0 else float("nan")),
        }
    return out


def record_gate_history(
    model: nn.Module, weights: Iterable[tuple[int, dict[str, torch.Tensor]]], images: torch.Tensor,
    labels: torch.Tensor, num_classes: int = 10, batch_size: int = 500, probe: str = "",
) -> GateHistory:
    """Replay ``(epoch, state_dict)`` pairs through ``model`` on probe ``images`` (uint8) and ``labels``.

    The model runs in eval mode (BN with the running statistics stored in each state dict), so the numbers are
    those a user of the weights at that epoch would see.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError("expected uint8 probe images (N, 3, H, W) and labels (N,)")
    check_class_labels(labels, num_classes)
    model = model.eval()
    blocks = se_block_names(model)
    if not blocks:
        raise ValueError("the model has no SE blocks: nothing to record")
    others = sorted({type(m).__name__ for m in model.se_blocks().values() if not isinstance(m, SEBlock)})
    if others:
        # the history counts SE's hidden units (dead ReLUs after fc1); the other attention modules have none or others
        raise ValueError(f"the gate history follows SE blocks (their hidden units); this model has {', '.join(others)} "
                         "in their place (config.attention)")
    hidden = {b: int(m.excitation.fc1.out_features) for b, m in model.se_blocks().items()}
    epochs: list[int] = []
    per_epoch: list[dict[str, dict[str, torch.Tensor]]] = []
    for epoch, state in weights:
        model.load_state_dict(state)
        epochs.append(int(epoch))
        per_epoch.append(_epoch_stats(model, images, labels, num_classes, batch_size))
    if not epochs:
        raise ValueError("no weights given")
    stats = {b: {k: torch.stack([e[b][k] for e in per_epoch]) for k in FIELDS} for b in blocks}
    return GateHistory(epochs, blocks, hidden, stats, probe)


def epoch_weights(run: str | os.PathLike) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(epoch, state_dict)`` for every ``epochs/epoch_NNN.safetensors`` of a run folder, in epoch order."""
    from safetensors.torch import load_file

    files = sorted(Path(run, "epochs").glob("epoch_*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{Path(run, 'epochs')} has no epoch_NNN.safetensors; train with "
                                f"--keep-epoch-weights to record them")
    for path in files:
        yield int(path.stem.split("_")[1]), load_file(str(path))
