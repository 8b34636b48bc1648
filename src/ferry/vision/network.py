"""The CNN: a few convolution blocks sized to the image, then a small dense head."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

# Blocks halve the image until it is about this small: enough context, few parameters.
SMALLEST_SIDE = 4
MAX_BLOCKS = 5


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def block_count(height: int, width: int) -> int:
    return max(1, min(MAX_BLOCKS, int(math.log2(min(height, width) / SMALLEST_SIDE))))


class ImageClassifier(nn.Module):
    """``[n, C, H, W]`` normalised images to class logits."""

    def __init__(self, channels: int, height: int, width: int, classes: int, filters: int) -> None:
        super().__init__()
        blocks, widths = block_count(height, width), [channels]
        for i in range(blocks):
            widths.append(filters * 2**i)
        self.features = nn.Sequential(*(_block(a, b) for a, b in itertools.pairwise(widths)))
        side = (height >> blocks) * (width >> blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(widths[-1] * side, 4 * filters),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(4 * filters, classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class Served(nn.Module):
    """What the ONNX graph computes: the class index and the class probabilities, as the
    tabular classifiers' graphs do, so servers shape both the same way."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.classifier(images), dim=1)
        return torch.argmax(probabilities, dim=1), probabilities
