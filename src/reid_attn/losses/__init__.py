"""Loss functions for person re-identification.

* :func:`cross_entropy_loss` – identity classification loss with optional label smoothing.
* :func:`triplet_loss` – batch-hard triplet loss (Hermans et al., 2017).
* :func:`pairwise_circle_loss` – pair-wise Circle loss (Sun et al., CVPR 2020).
* :class:`CircleSoftmax` – class-level Circle loss head producing logits for cross-entropy.
"""

from reid_attn.losses.circle import CircleSoftmax, pairwise_circle_loss
from reid_attn.losses.cross_entropy import cross_entropy_loss
from reid_attn.losses.triplet import triplet_loss

__all__ = ["CircleSoftmax", "cross_entropy_loss", "pairwise_circle_loss", "triplet_loss"]
