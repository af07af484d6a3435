"""BNNeck re-id head (Luo et al., "Bag of Tricks", 2019) with a linear or circle classifier."""

from __future__ import annotations

from torch import Tensor, nn

from reid_attn.losses import CircleSoftmax

CLASSIFIER_NAMES = ("linear", "circle")


class BNNeckHead(nn.Module):
    """Global average pooling, BatchNorm neck (bias frozen) and an identity classifier.

    ``forward(feature_map, targets)`` returns a dict with
    ``global`` (B, D) pooled feature (triplet loss), ``embedding`` (B, D) BN feature
    (retrieval), ``logits`` (B, num_classes) for the classification loss (circle: re-weighted
    with margins when ``targets`` are given) and ``scores`` (B, num_classes), the plain class
    scores (circle: ``scale * cosine``) for accuracy.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        classifier: str = "circle",
        scale: float = 64.0,
        margin: float = 0.35,
    ) -> None:
        super().__init__()
        if classifier not in CLASSIFIER_NAMES:
            raise ValueError(
                f"unknown classifier {classifier!r}; valid names: {', '.join(CLASSIFIER_NAMES)}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bnneck = nn.BatchNorm1d(in_features)
        self.bnneck.bias.requires_grad_(False)
        nn.init.ones_(self.bnneck.weight)
        nn.init.zeros_(self.bnneck.bias)
        self.classifier_name = classifier
        if classifier == "circle":
            self.classifier: nn.Module = CircleSoftmax(in_features, num_classes, scale, margin)
        else:
            self.classifier = nn.Linear(in_features, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feature_map: Tensor, targets: Tensor | None = None) -> dict[str, Tensor]:
        pooled = self.pool(feature_map).flatten(1)
        embedding = self.bnneck(pooled)
        scores = self.classifier(embedding)
        logits = scores
        if self.classifier_name == "circle" and targets is not None:
            logits = self.classifier(embedding, targets)
        return {"global": pooled, "embedding": embedding, "logits": logits, "scores": scores}
