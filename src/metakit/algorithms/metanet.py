"""Meta Networks (Munkhdalai & Yu 2017): fast weights generated from loss gradients.

Four parameter sets are trained jointly:
- theta: the embedding f_theta (the backbone, e.g. Conv-4) with an augmented layer `q`;
- w: the task-level fast-weight generator F_w, a coordinatewise LSTM (plus a learned gradient
  step) that reads the gradients of an embedding (contrastive) loss on T support pairs and
  emits fast weights q* for `q`;
- phi: the base learner g_phi (its own trunk of the backbone's architecture, then an augmented
  hidden layer and an augmented output layer);
- v: the example-level generator G_v, a coordinatewise MLP (plus a learned step) that turns the
  gradient of each support example's loss (taken with `torch.func.vmap(grad(...))`, one call
  for the whole support set) into that example's fast weights for g_phi's head, stored in a
  value memory.
The memory keys are the support embeddings (with q*); a query reads the memory by cosine
attention and runs g_phi with the slow weights plus its read fast weights. Layer augmentation:
the slow and fast outputs of a layer each pass a ReLU and are summed (the output layer sums its
slow and fast logits without a ReLU). Gradients enter the generators after the preprocessing of
Andrychowicz et al. (log-magnitude and sign); `first_order: true` (the default) treats them as
constants, as the paper does, `false` differentiates through them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metakit.algorithms.base import Algorithm, accuracy
from metakit.algorithms.protonet import cosine_similarity
from metakit.data.episode import Episode
from metakit.errors import ConfigError, DataError
from metakit.functional.gradients import preprocess_gradient
from metakit.models.backbone import Backbone

Params = dict[str, torch.Tensor]


class GradientStep(nn.Module):
    """The skip path of both generators: `-lr * g` with a learned `lr`. The networks' last
    layers start at zero, so at initialisation the fast weights are plain gradient steps (a
    query's read-out is then an attention-weighted sum of SGD steps on the support examples),
    and training learns what to change; without it, random initial generators give fast weights
    unrelated to the labels and training stays at chance for hundreds of episodes (measured)."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.log_lr = nn.Parameter(torch.tensor(lr).log())

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return -self.log_lr.exp() * g


def zero_last(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class CoordinateMLP(nn.Module):
    """Gradient `[...]` → one fast-weight value per coordinate `[...]`: `-lr g` plus an MLP of
    the preprocessed gradient."""

    def __init__(self, hidden: int, lr: float = 1.0) -> None:
        super().__init__()
        self.step = GradientStep(lr)
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), zero_last(nn.Linear(hidden, 1)))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.step(g) + self.net(preprocess_gradient(g)).squeeze(-1)


class CoordinateLSTM(nn.Module):
    """A sequence of gradients `[T, P]` → fast weights `[P]`: an LSTM shared by every
    coordinate (coordinates are the batch) reads the T gradients, its last state is decoded."""

    def __init__(self, hidden: int, lr: float = 1.0) -> None:
        super().__init__()
        self.step = GradientStep(lr)
        self.lstm = nn.LSTM(2, hidden)
        self.out = zero_last(nn.Linear(hidden, 1))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        # fp32 under bf16 autocast: oneDNN has no bf16 LSTM on CPUs without bf16 units (it
        # fails to create the primitive, seen single-threaded on an AMD EPYC)
        with torch.autocast(g.device.type, enabled=False):
            states, _ = self.lstm(preprocess_gradient(g.float()))  # [T, P, hidden]
        return self.step(g.mean(0)) + self.out(states[-1]).squeeze(-1)


def ring_pairs(n: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` distinct unordered pairs of `0..n-1`, neighbours first ((i, i+1), then (i, i+2),
    ...), so that with class-major support sets the first pairs include same-class ones."""
    seen: set[tuple[int, int]] = set()
    first, second = [], []
    for k in range(1, n):
        for i in range(n):
            a, b = sorted((i, (i + k) % n))
            if (a, b) not in seen:
                seen.add((a, b))
                first.append(a)
                second.append(b)
            if len(first) == count:
                return torch.tensor(first), torch.tensor(second)
    return torch.tensor(first, dtype=torch.long), torch.tensor(second, dtype=torch.long)


def embedding_pair_loss(
    q: Params, fa: torch.Tensor, fb: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """Contrastive loss of one pair under the slow layer `q` (unit embeddings, margin 1)."""
    ea = F.normalize(F.relu(F.linear(fa, q["weight"], q["bias"])), dim=-1)
    eb = F.normalize(F.relu(F.linear(fb, q["weight"], q["bias"])), dim=-1)
    d = (ea - eb).norm()
    return same * d.pow(2) + (1 - same) * F.relu(1 - d).pow(2)


def base_example_loss(p: Params, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one support example under the base learner's slow head."""
    h = F.relu(F.linear(f, p["w1"], p["b1"]))
    return F.cross_entropy(F.linear(h, p["w2"], p["b2"]).unsqueeze(0), y.unsqueeze(0))


def flatten(params: Params, batch_dims: int = 1) -> torch.Tensor:
    return torch.cat([v.flatten(batch_dims) for v in params.values()], -1)


def unflatten(flat: torch.Tensor, like: Params) -> Params:
    """Split `[..., P]` into tensors shaped like `like`'s values (with the leading dims)."""
    out, start = {}, 0
    for key, value in like.items():
        n = value.numel()
        out[key] = flat[..., start : start + n].unflatten(-1, value.shape)
        start += n
    return out


class MetaNet(Algorithm):
    """`ways`: the most classes an episode may have (the output layer's width); `pairs`: the T
    support pairs of the task-level embedding loss; `scale`: the attention temperature."""

    name = "metanet"
    needs_grad_to_adapt = True  # the fast weights come from gradients, also at test time

    def __init__(
        self,
        backbone: Backbone,
        ways: int = 20,
        embed_dim: int = 64,
        hidden: int = 64,
        pairs: int = 20,
        generator_hidden: int = 20,
        scale: float = 10.0,
        learn_scale: bool = True,
        first_order: bool = True,
    ) -> None:
        super().__init__(backbone)
        if min(ways, embed_dim, hidden, pairs, generator_hidden) < 1:
            raise ConfigError(
                "metanet ways, embed_dim, hidden, pairs, generator_hidden must be >= 1"
            )
        if scale <= 0:
            raise ConfigError(f"metanet scale must be positive, got {scale}")
        dim = backbone.out_dim
        self.ways, self.pairs, self.first_order = ways, pairs, first_order
        self.q = nn.Linear(dim, embed_dim)  # theta's augmented layer (slow weights)
        self.base = copy.deepcopy(backbone)  # phi's trunk: same architecture, own weights
        for module in self.base.modules():
            if hasattr(module, "reset_parameters") and module is not self.base:
                module.reset_parameters()
        self.b1 = nn.Linear(dim, hidden)
        self.b2 = nn.Linear(hidden, ways)
        self.task_generator = CoordinateLSTM(generator_hidden)  # F_w
        self.example_generator = CoordinateMLP(generator_hidden)  # G_v
        log_scale = torch.tensor(scale).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def parameter_sets(self) -> dict[str, list[nn.Parameter]]:
        """The paper's four parameter sets (theta also holds the attention temperature)."""
        return {
            "theta": [*self.backbone.parameters(), *self.q.parameters()]
            + ([self.log_scale] if isinstance(self.log_scale, nn.Parameter) else []),
            "phi": [*self.base.parameters(), *self.b1.parameters(), *self.b2.parameters()],
            "w": list(self.task_generator.parameters()),
            "v": list(self.example_generator.parameters()),
        }

    def maybe_detach(self, g: Params) -> Params:
        return {k: v.detach() for k, v in g.items()} if self.first_order else g

    # -- fast weights ---------------------------------------------------------------------
    def task_fast_weights(self, fu: torch.Tensor, y: torch.Tensor) -> Params:
        """q* from the gradients of the embedding loss on T support pairs."""
        a, b = ring_pairs(fu.shape[0], self.pairs)
        if a.numel() == 0:
            raise DataError("metanet needs at least two support examples per episode")
        same = (y[a] == y[b]).to(fu.dtype)
        q = {"weight": self.q.weight, "bias": self.q.bias}
        grads = vmap(grad(embedding_pair_loss), in_dims=(None, 0, 0, 0))(q, fu[a], fu[b], same)
        fast = self.task_generator(flatten(self.maybe_detach(grads)))  # [P]
        return unflatten(fast, q)

    def example_grads(self, fb: torch.Tensor, y: torch.Tensor, ways: int) -> Params:
        """Per-example gradients of the base learner's loss w.r.t. its head (one vmap call)."""
        p = self.head_params(ways)
        return vmap(grad(base_example_loss), in_dims=(None, 0, 0))(p, fb, y)

    def head_params(self, ways: int) -> Params:
        return {
            "w1": self.b1.weight,
            "b1": self.b1.bias,
            "w2": self.b2.weight[:ways],
            "b2": self.b2.bias[:ways],
        }

    def embed_task(self, fu: torch.Tensor, fast: Params) -> torch.Tensor:
        """The augmented embedding layer: relu(slow) + relu(fast)."""
        return F.relu(self.q(fu)) + F.relu(F.linear(fu, fast["weight"], fast["bias"]))

    # -- the common interface -------------------------------------------------------------
    def adapt_features(self, fu: torch.Tensor, fb: torch.Tensor, y: torch.Tensor) -> dict:
        ways = int(y.max()) + 1
        if ways > self.ways:
            raise DataError(
                f"this metanet was built for at most {self.ways} ways, got {ways}; set "
                "algorithm.ways to the largest number of ways"
            )
        q_fast = self.task_fast_weights(fu, y)
        grads = flatten(self.maybe_detach(self.example_grads(fb, y, ways)))  # [S, P]
        memory = self.example_generator(grads)  # W*_i of each support example
        return {
            "q_fast": q_fast,
            "keys": self.embed_task(fu, q_fast),
            "memory": memory,
            "ways": ways,
        }

    def score(self, state: dict, fu: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        ways = state["ways"]
        r = self.embed_task(fu, state["q_fast"])
        attention = (self.log_scale.exp() * cosine_similarity(r, state["keys"])).softmax(-1)
        fast = unflatten(attention @ state["memory"], self.head_params(ways))  # per query
        p = self.head_params(ways)
        h = F.relu(F.linear(fb, p["w1"], p["b1"])) + F.relu(
            torch.einsum("qhd,qd->qh", fast["w1"], fb) + fast["b1"]
        )
        slow = F.linear(h, p["w2"], p["b2"])
        return slow + torch.einsum("qkh,qh->qk", fast["w2"], h) + fast["b2"]

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> dict:
        state = self.adapt_features(
            self.backbone.embed(support_x), self.base.embed(support_x), support_y
        )
        return {k: (v.detach() if torch.is_tensor(v) else v) for k, v in state.items()} | {
            "q_fast": {k: v.detach() for k, v in state["q_fast"].items()}
        }

    def logits(self, state: dict, query_x: torch.Tensor) -> torch.Tensor:
        return self.score(state, self.backbone.embed(query_x), self.base.embed(query_x))

    def task_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        # one pass of each trunk over support and query together (BatchNorm sees the episode)
        n = episode.support_x.shape[0]
        x = torch.cat([episode.support_x, episode.query_x])
        fu, fb = self.backbone.embed(x), self.base.embed(x)
        state = self.adapt_features(fu[:n], fb[:n], episode.support_y)
        logits = self.score(state, fu[n:], fb[n:])
        return F.cross_entropy(logits.float(), episode.query_y), accuracy(logits, episode.query_y)
