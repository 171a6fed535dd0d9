"""The torch module: gated attention MIL (Ilse, Tomczak and Welling, 2018).

A bag is a set of instance embeddings. Each instance is encoded, scored by a gated
attention network, and the bag representation is the attention-weighted sum of the
encoded instances. Batches of bags are zero-padded to a common length and a boolean
mask marks the real instances; padded positions get exactly zero attention.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedAttentionMIL(nn.Module):
    """Gated attention multiple instance learning classifier.

    The instance encoder is ``Linear(in_dim, hidden) -> ReLU -> Dropout``; the attention
    score of an encoded instance ``h`` is ``w^T (tanh(V h) * sigmoid(U h))``, normalised by
    a softmax over the valid instances of its bag; the classifier is
    ``Dropout -> Linear(hidden, n_classes)`` applied to the pooled representation.

    The dropout layers are plain :class:`torch.nn.Dropout` modules so that Monte-Carlo
    dropout can switch them on at inference time.

    Parameters
    ----------
    in_dim
        Dimension of the instance embeddings.
    n_classes
        Number of classes.
    hidden
        Width of the instance encoder.
    attention_dim
        Width of the gated attention network.
    dropout
        Dropout probability of the encoder and the classifier.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden: int = 64,
        attention_dim: int = 32,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if in_dim < 1 or n_classes < 1 or hidden < 1 or attention_dim < 1:
            raise ValueError("in_dim, n_classes, hidden and attention_dim must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.hidden = hidden
        self.attention_dim = attention_dim
        self.dropout_p = dropout

        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention_v = nn.Linear(hidden, attention_dim)
        self.attention_u = nn.Linear(hidden, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Classify a batch of zero-padded bags.

        Parameters
        ----------
        x
            Instance embeddings, shape (B, N, in_dim).
        mask
            Boolean mask, shape (B, N); True marks a real instance, False padding.

        Returns
        -------
        logits
            Class logits, shape (B, n_classes).
        attention
            Attention weights, shape (B, N): exactly 0 at padded positions and summing to 1
            over the valid instances of each bag (all zeros for a bag with no instance).
        """
        if x.dim() != 3 or mask.shape != x.shape[:2]:
            raise ValueError(f"expected x (B, N, d) and mask (B, N), got {tuple(x.shape)} and {tuple(mask.shape)}")
        return self.pool_and_classify(self.instance_features(x), mask)

    def instance_features(self, x: Tensor) -> Tensor:
        """Compute the deterministic part of the instance encoder (linear + ReLU, before its dropout).

        Monte-Carlo dropout computes it once per batch and repeats only
        :meth:`pool_and_classify`, which holds every dropout layer.
        """
        return self.encoder[1](self.encoder[0](x))

    def pool_and_classify(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Apply encoder dropout, gated attention pooling and the classifier to :meth:`instance_features`."""
        mask = mask.to(dtype=torch.bool)
        h = self.encoder[2](features)  # (B, N, hidden)
        gate = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        scores = self.attention_w(gate).squeeze(-1)  # (B, N)
        # The most negative finite value instead of -inf keeps an empty bag free of NaN;
        # exp(min - max) underflows to exactly 0 for the padded positions of a non-empty bag.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        attention = torch.softmax(scores, dim=1) * mask.to(scores.dtype)
        pooled = torch.bmm(attention.unsqueeze(1), h).squeeze(1)  # (B, hidden)
        logits = self.classifier(pooled)
        return logits, attention
