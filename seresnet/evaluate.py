"""Evaluate a model on CIFAR-10: accuracy, per-class accuracy and the confusion matrix.

``python -m seresnet.evaluate --pretrained se_resnet20`` or ``--weights runs/se20`` (a run directory, a
``model.safetensors`` with its ``metadata.json``, or a ``checkpoint.pt``), on any data source (``--data``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass

import torch
from torch import nn

from .data import CIFAR10_CLASSES, TensorBatches, check_class_labels, load_cifar10, load_eval_set


def accuracy_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) for an accuracy of ``correct`` out of ``n`` images.

    A test set is a sample of the images the model will meet: 1,000 images at 90% carry about +-1.9 points.
    """
    if n < 1:
        raise ValueError("an accuracy interval needs at least one image")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(correct_a: torch.Tensor, correct_b: torch.Tensor, z: float = 1.96,
                      ) -> tuple[float, tuple[float, float]]:
    """Accuracy of model A minus that of model B on the same images, with a 95% interval (by default).

    ``correct_a``, ``correct_b``: (N,) bool, whether each model got each image right. The interval comes from the
    per-image differences (each -1, 0 or 1), so the images both models get right or wrong add no noise: it is much
    narrower than two separate intervals when the models agree on most images (normal approximation, as McNemar's).
    """
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1 or correct_a.numel() < 2:
        raise ValueError(f"expected two (N,) outcomes on the same N >= 2 images, got shapes "
                         f"{tuple(correct_a.shape)} and {tuple(correct_b.shape)}")
    d = correct_a.double() - correct_b.double()
    mean = float(d.mean())
    half = z * float(d.std(correction=1)) / math.sqrt(d.numel())
    return mean, (mean - half, mean + half)


@dataclass
class EvalResult:
    """Accuracy (0..1), mean cross-entropy, per-class accuracy (K,), confusion (K, K; rows true, columns predicted),
    and the predicted class of every image (N,)."""

    accuracy: float
    loss: float
    per_class_accuracy: torch.Tensor
    confusion: torch.Tensor
    predictions: torch.Tensor

    @property
    def images(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy (the images are a sample)."""
        return accuracy_interval(round(self.accuracy * self.images), self.images)

    def as_dict(self, class_names: tuple[str, ...] = CIFAR10_CLASSES) -> dict:
        return {"accuracy": self.accuracy, "images": self.images, "ci95": list(self.interval), "loss": self.loss,
                "per_class_accuracy": dict(zip(class_names, self.per_class_accuracy.tolist())),
                "confusion": self.confusion.tolist()}


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 500, bf16: bool = False, channels_last: bool = False,
    flip_tta: bool = False,
) -> torch.Tensor:
    """Logits (N, K) in float32 for uint8 images (N, 3, H, W), in eval mode (the mode is restored afterwards).

    ``flip_tta``: test-time augmentation, the mean of the logits of each image and of its horizontal mirror image
    (the training augmentation flips, so both are images the model has learnt from).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    labels = torch.zeros(images.shape[0], dtype=torch.int64)
    out = []
    try:
        for x, _ in TensorBatches(images, labels, batch_size, channels_last=channels_last):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                x = x.to(device)
                logits = model(x).float()
                if flip_tta:
                    logits = (logits + model(x.flip(3)).float()) / 2
                out.append(logits.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500, bf16: bool = False,
    channels_last: bool = False, num_classes: int | None = None, flip_tta: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on uint8 images (N, 3, H, W) with int labels (N,); ``flip_tta`` as in ``predict_logits``."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected uint8 images (N, 3, H, W) with values 0..255, got "
                        f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                      torch.uint8) or labels.ndim != 1:
        raise TypeError(f"expected integer class labels of shape (N,), got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError("no images to evaluate")
    labels = labels.long()
    logits = predict_logits(model, images, batch_size, bf16, channels_last, flip_tta=flip_tta)
    k = num_classes or logits.shape[1]
    check_class_labels(labels, k)
    preds = logits.argmax(1)
    confusion = torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    return EvalResult(
        accuracy=float((preds == labels).double().mean()),
        loss=float(nn.functional.cross_entropy(logits, labels)),
        per_class_accuracy=per_class,
        confusion=confusion,
        predictions=preds,
    )


def main(argv: list[str] | None = None) -> int:
    from .pretrained import load_model, load_pretrained

    p = argparse.ArgumentParser(prog="python -m seresnet.evaluate", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pretrained", help="a shipped checkpoint name, e.g. se_resnet20")
    src.add_argument("--weights", help="run directory, model.safetensors or checkpoint.pt")
    p.add_argument("--data", default=None,
                   help="data root (default: $SERESNET_DATA or data/); for the test split also a class folder "
                        "<class>/*.png|jpg such as cifar10-lossless/test-subset")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--flip-tta", action="store_true", help="average the logits of each image and its mirror image")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = p.parse_args(argv)
    try:
        model = load_pretrained(args.pretrained) if args.pretrained else load_model(args.weights)
        if args.split == "test" and args.data is not None:
            images, labels = load_eval_set(args.data)  # a data root's test split, or a class folder
        else:
            images, labels = load_cifar10(args.split, args.data)
        result = evaluate(model, images, labels, flip_tta=args.flip_tta)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(f"accuracy {result.accuracy:.4f} on {len(labels)} {args.split} images")
        for name, acc in zip(CIFAR10_CLASSES, result.per_class_accuracy.tolist()):
            print(f"  {name:<11} {acc:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
