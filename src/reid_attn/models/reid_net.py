"""The full re-id network: attention ResNet50 backbone + BNNeck head."""

from __future__ import annotations

from torch import Tensor, nn

from reid_attn.models.head import BNNeckHead
from reid_attn.models.resnet import ResNet50


class ReIDNet(nn.Module):
    """``forward(images (B,3,H,W), targets (B,) | None)`` -> dict of ``global``, ``embedding``,
    ``logits``, ``scores`` (see :class:`BNNeckHead`); :meth:`embed` gives only the retrieval
    embedding ``(B, 2048)``."""

    def __init__(self, backbone: ResNet50, head: BNNeckHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor, targets: Tensor | None = None) -> dict[str, Tensor]:
        return self.head(self.backbone(images), targets)

    def embed(self, images: Tensor) -> Tensor:
        """Retrieval embedding (the BNNeck feature), shape ``(B, 2048)``."""
        return self.head.bnneck(self.head.pool(self.backbone(images)).flatten(1))


def build_reid_net(
    num_classes: int,
    attention: str = "cbam",
    attention_kwargs: dict | None = None,
    last_stride: int = 1,
    classifier: str = "circle",
    scale: float = 64.0,
    margin: float = 0.35,
) -> ReIDNet:
    """Build the paper's network.

    Args:
        num_classes: number of training identities.
        attention: ``none`` | ``se`` | ``eca`` | ``cbam`` | ``cbam_bn``, placed after bn3 in all 16
            bottlenecks.
        attention_kwargs: options of the attention module (e.g. ``reduction``).
        last_stride: stride of layer4 (1 doubles the final feature map, the re-id default).
        classifier: ``linear`` (softmax CE) or ``circle`` (CircleSoftmax).
        scale, margin: CircleSoftmax scale and margin (ignored for ``linear``).
    """
    backbone = ResNet50(attention, attention_kwargs, last_stride)
    head = BNNeckHead(backbone.out_channels, num_classes, classifier, scale, margin)
    return ReIDNet(backbone, head)
