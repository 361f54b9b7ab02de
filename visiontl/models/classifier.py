"""Image classifier: backbone -> global average pool of the deepest map -> linear or MLP head."""

from __future__ import annotations

import torch
from torch import nn

from visiontl.backbones import Backbone
from visiontl.models.defaults import model_default

# Where the backbone's body sits in this model's state dict; `model.weights: <checkpoint>` reads it back.
BACKBONE_PREFIX = "backbone.body."


class Classifier(nn.Module):
    """Args:
        backbone: any `Backbone`.
        num_classes: number of output logits.
        head: 'linear' or 'mlp' (one hidden layer with ReLU).
        mlp_hidden: width of the MLP's hidden layer.
        dropout: dropout before the last linear layer.

    >>> from visiontl.backbones import create_backbone
    >>> model = Classifier(create_backbone("resnet18", weights="none"), num_classes=3)
    >>> model(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, head: str = model_default("head"),
                 mlp_hidden: int = model_default("mlp_hidden"), dropout: float = model_default("dropout")):
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        width = backbone.out_channels
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        if head == "mlp":
            self.head = nn.Sequential(nn.Linear(width, mlp_hidden), nn.ReLU(inplace=True), *drop,
                                      nn.Linear(mlp_hidden, num_classes))
        elif head == "linear":
            self.head = nn.Sequential(*drop, nn.Linear(width, num_classes))
        else:
            raise ValueError(f"unknown classifier head {head!r}; choose 'linear' or 'mlp'")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled deepest feature map, (N, C)."""
        deepest = next(reversed(self.backbone(x).values()))
        return torch.flatten(self.pool(deepest), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(backbone: Backbone, num_classes: int, *, head: str = model_default("head"),
                     mlp_hidden: int = model_default("mlp_hidden"), dropout: float = model_default("dropout")) -> Classifier:
    """`Classifier` for any `model.head`, the scikit-learn ones included."""
    # The scikit-learn heads are linear maps once fitted: the model holds them as a linear layer.
    layer = "linear" if head in ("logistic_regression", "linear_svm") else head
    return Classifier(backbone, num_classes, head=layer, mlp_hidden=mlp_hidden, dropout=dropout)
