"""ResNet50 backbone with an attention module in every bottleneck (after bn3, before the add).

Parameter names follow ``torchvision.models.resnet50`` exactly, so torchvision's ImageNet
weights load with the attention parameters (``layerX.Y.attn.*``) as the only missing keys.
"""

from __future__ import annotations

from torch import Tensor, nn

from reid_attn.models.attention import create_attention

RESNET50_LAYERS = (3, 4, 6, 3)


class AttentionBottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv) with ``attn`` applied after ``bn3``."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        attention: str,
        attention_kwargs: dict,
    ) -> None:
        super().__init__()
        width = planes
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.attn = create_attention(attention, out_channels, **attention_kwargs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet50 trunk without the classifier: ``(B, 3, H, W) -> (B, 2048, H/s, W/s)``.

    ``s`` is 32 with ``last_stride=2`` and 16 with ``last_stride=1`` (the re-id default).
    """

    out_channels = 2048

    def __init__(
        self,
        attention: str = "cbam",
        attention_kwargs: dict | None = None,
        last_stride: int = 1,
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        kwargs = dict(attention_kwargs or {})
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        strides = (1, 2, 2, last_stride)
        for index, (planes, blocks, stride) in enumerate(
            zip((64, 128, 256, 512), RESNET50_LAYERS, strides, strict=True), start=1
        ):
            layer = []
            for block in range(blocks):
                layer.append(
                    AttentionBottleneck(
                        inplanes, planes, stride if block == 0 else 1, attention, kwargs
                    )
                )
                inplanes = planes * AttentionBottleneck.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def bottlenecks(self) -> list[AttentionBottleneck]:
        """All 16 bottlenecks in forward order."""
        return [m for m in self.modules() if isinstance(m, AttentionBottleneck)]

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
