"""Training: Adam on augmented mini-batches, early stopping on validation loss, seeded."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ferry.core.bundle import ImagePreprocessing
from ferry.core.spec import CnnSpec
from ferry.vision.network import ImageClassifier

EpochHook = Callable[[dict[str, float]], None]
PREDICT_BATCH = 512


@dataclass
class FitResult:
    network: ImageClassifier
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0

    @property
    def stopped_early(self) -> bool:
        return len(self.history) > self.best_epoch + 1


@dataclass(frozen=True)
class Batches:
    """Training images scaled to [0, 1] (augmented before normalising) and class indices."""

    images: torch.Tensor
    targets: torch.Tensor


def scaled(pixels: np.ndarray, prep: ImagePreprocessing) -> torch.Tensor:
    """``uint8 [n, H, W, C]`` to ``float32 [n, C, H, W]`` in [0, 1], not yet normalised."""
    array = pixels.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(prep.scale)
    return torch.from_numpy(np.ascontiguousarray(array))


def augment(images: torch.Tensor, options: CnnSpec, generator: torch.Generator) -> torch.Tensor:
    """Random small rotations and shifts, one affine warp per image; edges are extended."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(options.max_rotation)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * options.max_shift)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def _normaliser(prep: ImagePreprocessing) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = torch.tensor(prep.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return lambda images: (images - mean) / std


def _train_epoch(
    network: ImageClassifier,
    data: Batches,
    optimiser: torch.optim.Optimizer,
    options: CnnSpec,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
) -> float:
    network.train()
    order = torch.randperm(len(data.targets), generator=generator)
    total = 0.0
    for start in range(0, len(order), options.batch_size):
        index = order[start : start + options.batch_size]
        images = data.images[index]
        if options.augment:
            images = augment(images, options, generator)
        loss = nn.functional.cross_entropy(network(normalise(images)), data.targets[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += loss.item() * len(index)
    return total / len(order)


def logits(network: ImageClassifier, inputs: np.ndarray) -> torch.Tensor:
    """Logits for model-ready ``float32 [n, C, H, W]`` inputs, in eval mode."""
    network.eval()
    with torch.no_grad():
        parts = [
            network(torch.from_numpy(inputs[i : i + PREDICT_BATCH]))
            for i in range(0, len(inputs), PREDICT_BATCH)
        ]
    return torch.cat(parts)


def predict_proba(network: ImageClassifier, inputs: np.ndarray) -> np.ndarray:
    return torch.softmax(logits(network, inputs), dim=1).numpy()


def _validate(
    network: ImageClassifier, inputs: np.ndarray, targets: torch.Tensor
) -> tuple[float, float]:
    scores = logits(network, inputs)
    loss = float(nn.functional.cross_entropy(scores, targets))
    accuracy = float((scores.argmax(dim=1) == targets).float().mean())
    return loss, accuracy


def fit(
    network: ImageClassifier,
    train: Batches,
    valid: tuple[np.ndarray, torch.Tensor],
    options: CnnSpec,
    prep: ImagePreprocessing,
    on_epoch: EpochHook | None = None,
) -> FitResult:
    """Train up to ``options.epochs``; keep the weights of the best validation loss and stop
    after ``options.patience`` epochs without a better one. Seed torch before building the
    network: its initial weights and dropout draw from the global generator."""
    # Small networks gain little from more threads, and on a shared machine spinning threads
    # slow each other down many times over: one thread unless the spec asks for more.
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        return _fit(network, train, valid, options, prep, on_epoch)
    finally:
        torch.set_num_threads(threads)


def _fit(
    network: ImageClassifier,
    train: Batches,
    valid: tuple[np.ndarray, torch.Tensor],
    options: CnnSpec,
    prep: ImagePreprocessing,
    on_epoch: EpochHook | None,
) -> FitResult:
    generator = torch.Generator().manual_seed(options.seed)
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.lr, weight_decay=1e-4)
    normalise = _normaliser(prep)
    result, best_loss, best_state = FitResult(network), math.inf, None
    started = time.perf_counter()
    for epoch in range(options.epochs):
        train_loss = _train_epoch(network, train, optimiser, options, normalise, generator)
        valid_loss, valid_accuracy = _validate(network, *valid)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss}
        result.history.append({**row, "valid_accuracy": valid_accuracy})
        if on_epoch is not None:
            on_epoch(result.history[-1])
        if valid_loss < best_loss:
            best_loss, best_state, result.best_epoch = valid_loss, _state(network), epoch
        elif epoch - result.best_epoch >= options.patience:
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    result.seconds = time.perf_counter() - started
    return result


def _state(network: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy(network.state_dict())
