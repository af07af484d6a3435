"""Data: dataset parsers, synthetic data, transforms, PK sampler and the datamodule."""

from reid_attn.data.datamodule import ReIDDataModule
from reid_attn.data.datasets import MSMT17, DatasetError, DukeMTMC, Market1501
from reid_attn.data.sampler import PKSampler
from reid_attn.data.synthetic import SyntheticSpec, generate_synthetic_market

__all__ = [
    "MSMT17",
    "DatasetError",
    "DukeMTMC",
    "Market1501",
    "PKSampler",
    "ReIDDataModule",
    "SyntheticSpec",
    "generate_synthetic_market",
]
