"""reid-attn: person re-identification with joint loss and multiple attention mechanisms."""

__version__ = "0.1.0"
