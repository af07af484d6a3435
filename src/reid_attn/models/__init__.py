"""Models: attention modules, the attention ResNet50 backbone and the re-id network."""

from reid_attn.models.attention import ATTENTION_NAMES, create_attention
from reid_attn.models.head import BNNeckHead
from reid_attn.models.reid_net import ReIDNet, build_reid_net
from reid_attn.models.resnet import ResNet50

__all__ = [
    "ATTENTION_NAMES",
    "BNNeckHead",
    "ReIDNet",
    "ResNet50",
    "build_reid_net",
    "create_attention",
]
