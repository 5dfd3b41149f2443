"""Matching Networks (Vinyals et al. 2016): attention over the support set, labels as values.

A query's class distribution is `sum_i a(x, x_i) * onehot(y_i)` with the attention
`a = softmax_i(scale * cos(f(x), g(x_i)))`. With `fce: true` the embeddings are made aware of the
whole support set ("full context embeddings"): `g` adds a bidirectional LSTM over the support
embeddings, and `f` runs an attention LSTM for `read_steps` steps that reads the support set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metakit.algorithms.base import Algorithm, accuracy
from metakit.algorithms.protonet import cosine_similarity
from metakit.data.episode import Episode
from metakit.errors import ConfigError
from metakit.models.backbone import Backbone


def attention_log_probs(
    similarities: torch.Tensor, support_y: torch.Tensor, ways: int
) -> torch.Tensor:
    """`log sum_{i: y_i = k} softmax_i(s)` as `[Q, ways]`, computed in log space for stability.

    `similarities` is `[Q, S]` (already scaled); the result is a normalised log-distribution, so
    cross-entropy on it is the paper's negative log-likelihood.
    """
    log_attention = similarities.log_softmax(-1)  # [Q, S]
    onehot = F.one_hot(support_y, ways).to(similarities.dtype)  # [S, ways]
    mask = torch.log(onehot)  # 0 where y_i == k, -inf elsewhere
    return torch.logsumexp(log_attention.unsqueeze(-1) + mask, dim=-2)


class FullContextEmbedding(nn.Module):
    """The two context modules of the paper's appendix.

    `support(g')`: `g(x_i) = g'(x_i) + h_fwd_i + h_bwd_i` (bidirectional LSTM over the support
    sequence). `query(f', g)`: `read_steps` steps of an LSTM whose input is `f'(x)`;
    the hidden state fed back is `h + r`, where `h = LSTM output + f'(x)` and `r` is the
    attention read-out of `g` with `h` (the sum replaces the paper's concatenation `[h, r]` so
    that the state keeps the embedding size, as most re-implementations do).
    """

    def __init__(self, dim: int, read_steps: int) -> None:
        super().__init__()
        self.dim, self.read_steps = dim, read_steps
        self.support_lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)
        self.query_cell = nn.LSTMCell(dim, dim)

    def support(self, g: torch.Tensor) -> torch.Tensor:
        out, _ = self.support_lstm(g.unsqueeze(0))  # [1, S, 2D]
        return g + out[0, :, : self.dim] + out[0, :, self.dim :]

    def query(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(f)
        c = torch.zeros_like(f)
        r = torch.zeros_like(f)
        for _ in range(self.read_steps):
            h_hat, c = self.query_cell(f, (h + r, c))
            h = h_hat + f
            r = (h @ g.T).softmax(-1) @ g
        return h


class MatchingNet(Algorithm):
    """Cosine attention kernel over the support set; optional full context embeddings."""

    name = "matching"

    def __init__(
        self,
        backbone: Backbone,
        fce: bool = False,
        read_steps: int = 5,
        scale: float = 10.0,
        learn_scale: bool = True,
    ) -> None:
        super().__init__(backbone)
        if scale <= 0:
            raise ConfigError(f"matching scale must be positive, got {scale}")
        if read_steps < 1:
            raise ConfigError(f"matching read_steps must be at least 1, got {read_steps}")
        self.fce = FullContextEmbedding(backbone.out_dim, read_steps) if fce else None
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.contextual_support(self.backbone.embed(support_x)), support_y

    def contextual_support(self, g: torch.Tensor) -> torch.Tensor:
        return self.fce.support(g) if self.fce is not None else g

    def logits(
        self, state: tuple[torch.Tensor, torch.Tensor], query_x: torch.Tensor
    ) -> torch.Tensor:
        return self.score(self.backbone.embed(query_x), *state)

    def score(self, f: torch.Tensor, g: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """Log class probabilities `[Q, ways]` of query embeddings `f` given support `g`."""
        if self.fce is not None:
            f = self.fce.query(f, g)
        similarities = self.log_scale.exp() * cosine_similarity(f, g)
        return attention_log_probs(similarities, support_y, int(support_y.max()) + 1)

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        # one forward pass over the whole episode, as for ProtoNet
        n = episode.support_x.shape[0]
        z = self.backbone.embed(torch.cat([episode.support_x, episode.query_x]))
        logits = self.score(z[n:], self.contextual_support(z[:n]), episode.support_y)
        return F.nll_loss(logits, episode.query_y), accuracy(logits, episode.query_y)
