"""Memory-augmented neural network (Santoro et al. 2016): an LSTM controller with an external
memory written by Least Recently Used Access (LRUA) and read by content.

An episode is one sequence of `(x_t, y_{t-1})`: the label of each example arrives one step
late (the first step gets a null label), so the network must bind an image to its label in
memory and recall it at the next presentation of the class. The memory is reset for every
episode. Labels are one-hot, or (`labels: string`) the paper's five-character strings over a
five-letter alphabet, one random string per class and episode.

Step t (per read head; usage and the least-used weights are shared by the heads):
  k_t = tanh(W_k h_t),  alpha_t = W_a h_t
  w^w_t = sigmoid(alpha_t) w^r_{t-1} + (1 - sigmoid(alpha_t)) w^lu_{t-1}
  M_{t-1}(argmin w^u_{t-1}) <- 0;   M_t = M_{t-1} + w^w_t k_t^T
  w^r_t = softmax_i(beta_t cos(k_t, M_t(i))),  r_t = sum_i w^r_t(i) M_t(i)
  w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t;  w^lu_t = 1 on the n smallest usages (n = heads)
`key_strength: false` fixes beta = 1 (the paper's plain softmax over cosines); the default learns
beta > 0 per head as the NTM does, since a softmax over 128 cosines in [-1, 1] is nearly flat.
`read_from: previous` (default) computes the read weights on the memory before this step's write
(M_{t-1}) and reads M_t under them; `written` addresses M_t itself, as the equations are printed.
Addressing M_t, the key just written to a zeroed slot has cosine 1 with that slot, so the read
returns mostly the controller's own key rather than what an earlier presentation stored (measured
here: at chance on validation after 2,000 steps with `written`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from metakit.algorithms.base import Algorithm
from metakit.data.augment import random_affine
from metakit.data.episode import Episode
from metakit.errors import ConfigError, DataError
from metakit.models.backbone import Backbone

STRING_LENGTH, STRING_LETTERS = 5, 5  # the paper's string labels: 5 characters from 5 letters


@dataclass
class MemoryState:
    """Everything the sequence carries from one step to the next (batched over episodes)."""

    h: torch.Tensor  # controller hidden [B, H]
    c: torch.Tensor  # controller cell [B, H]
    memory: torch.Tensor  # [B, slots, width]
    usage: torch.Tensor  # w^u [B, slots]
    read_weights: torch.Tensor  # w^r [B, heads, slots]
    least_used: torch.Tensor  # w^lu [B, slots]
    reads: torch.Tensor  # r [B, heads, width]

    def expand(self, n: int) -> MemoryState:
        """The single state of one episode repeated `n` times (independent continuations)."""
        return MemoryState(*(t.expand(n, *t.shape[1:]) for t in vars(self).values()))


def least_used_weights(usage: torch.Tensor, n: int) -> torch.Tensor:
    """1 at the `n` smallest usages of each row, 0 elsewhere."""
    index = usage.topk(n, dim=-1, largest=False).indices
    return torch.zeros_like(usage).scatter_(-1, index, 1.0)


def lrua_write(
    memory: torch.Tensor,
    usage: torch.Tensor,
    read_weights: torch.Tensor,
    least_used: torch.Tensor,
    keys: torch.Tensor,
    alpha: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write weights `[B, R, N]` and the memory after the write: the least-used slot (by the
    previous usage) is zeroed, then each head adds its key under its write weights."""
    gate = torch.sigmoid(alpha).unsqueeze(-1)  # [B, R, 1]
    write = gate * read_weights + (1 - gate) * least_used.unsqueeze(1)
    zero = F.one_hot(usage.argmin(-1), usage.shape[-1]).to(memory.dtype)  # [B, N]
    memory = memory * (1 - zero).unsqueeze(-1) + torch.einsum("brn,brw->bnw", write, keys)
    return write, memory


def content_read(
    memory: torch.Tensor, keys: torch.Tensor, strength: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read weights `softmax_i(strength * cos(k, M_i))` `[B, R, N]` and read vectors `[B, R, W]`."""
    cos = torch.einsum(
        "brw,bnw->brn", F.normalize(keys, dim=-1, eps=1e-8), F.normalize(memory, dim=-1, eps=1e-8)
    )
    weights = (strength.unsqueeze(-1) * cos).softmax(-1)
    return weights, weights @ memory


def instance_numbers(labels: torch.Tensor) -> torch.Tensor:
    """1-based presentation count of each step's class within its sequence (`[..., L]` ints)."""
    onehot = F.one_hot(labels, int(labels.max()) + 1)
    return (onehot.cumsum(-2) * onehot).sum(-1)


def delayed_labels(targets: torch.Tensor) -> torch.Tensor:
    """Label inputs `[B, L, D]`: step t gets the target of step t-1, step 0 a null (zero) label."""
    return torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)


class MANN(Algorithm):
    """`ways` is the most classes an episode may have (the output size, one-hot labels);
    `steps` cuts each training/evaluation sequence to that many steps (None: all examples of
    the episode). `augment` applies a small random rotation and translation to every image in
    training (the Vinyals split already holds the 90-degree rotations as classes)."""

    name = "mann"

    def __init__(
        self,
        backbone: Backbone,
        ways: int = 5,
        controller: int = 200,
        slots: int = 128,
        width: int = 40,
        heads: int = 4,
        gamma: float = 0.95,
        labels: Literal["onehot", "string"] = "onehot",
        key_strength: bool = True,
        read_from: Literal["previous", "written"] = "previous",
        steps: int | None = None,
        augment: bool = False,
    ) -> None:
        super().__init__(backbone)
        if labels not in ("onehot", "string"):
            raise ConfigError(f"mann labels must be 'onehot' or 'string', got {labels!r}")
        if min(ways, controller, slots, width, heads) < 1:
            raise ConfigError("mann ways, controller, slots, width and heads must be >= 1")
        if heads >= slots:
            raise ConfigError(
                f"mann with {heads} read heads writes to the {heads} least-used of {slots} "
                "memory slots; use more slots than heads"
            )
        if ways > slots:
            raise ConfigError(
                f"mann cannot address {ways} classes per episode with {slots} memory slots; "
                "raise algorithm.slots or lower the ways"
            )
        if labels == "string" and ways > STRING_LETTERS**STRING_LENGTH:
            raise ConfigError(f"string labels name at most {STRING_LETTERS**STRING_LENGTH} classes")
        if steps is not None and steps < ways:
            raise ConfigError(
                f"a mann sequence of {steps} steps cannot present each of {ways} classes once; "
                "raise algorithm.steps"
            )
        if not 0 <= gamma <= 1:
            raise ConfigError(f"mann gamma (usage decay) must lie in [0, 1], got {gamma}")
        self.ways, self.slots, self.width, self.heads, self.gamma = ways, slots, width, heads, gamma
        self.labels, self.steps, self.augment = labels, steps, augment
        self.label_dim = STRING_LENGTH * STRING_LETTERS if labels == "string" else ways
        self.cell = nn.LSTMCell(backbone.out_dim + self.label_dim + heads * width, controller)
        self.interface = nn.Linear(controller, heads * (width + 2))  # keys, alpha, strength
        self.out = nn.Linear(controller + heads * width, self.label_dim)
        self.key_strength = key_strength
        if read_from not in ("previous", "written"):
            raise ConfigError(f"mann read_from must be 'previous' or 'written', got {read_from!r}")
        self.read_from = read_from

    # -- the recurrent core ---------------------------------------------------------------
    def initial_state(self, batch: int, like: torch.Tensor) -> MemoryState:
        z = like.new_zeros
        hidden = self.cell.hidden_size
        usage = z(batch, self.slots)
        return MemoryState(
            h=z(batch, hidden),
            c=z(batch, hidden),
            memory=z(batch, self.slots, self.width),
            usage=usage,
            read_weights=z(batch, self.heads, self.slots),
            least_used=least_used_weights(usage, self.heads),
            reads=z(batch, self.heads, self.width),
        )

    def step(
        self, state: MemoryState, x: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, MemoryState]:
        """One time step: output scores `[B, label_dim]` and the next state."""
        b = x.shape[0]
        h, c = self.cell(torch.cat([x, label, state.reads.flatten(1)], -1), (state.h, state.c))
        iface = self.interface(h).view(b, self.heads, self.width + 2)
        keys, alpha = torch.tanh(iface[..., : self.width]), iface[..., self.width]
        strength = (
            F.softplus(iface[..., self.width + 1]) + 1
            if self.key_strength
            else torch.ones_like(alpha)
        )
        write, memory = lrua_write(
            state.memory, state.usage, state.read_weights, state.least_used, keys, alpha
        )
        if self.read_from == "previous":  # address M_{t-1}, read M_t
            read_weights, _ = content_read(state.memory, keys, strength)
            reads = read_weights @ memory
        else:
            read_weights, reads = content_read(memory, keys, strength)
        usage = self.gamma * state.usage + read_weights.sum(1) + write.sum(1)
        new = MemoryState(
            h, c, memory, usage, read_weights, least_used_weights(usage, self.heads), reads
        )
        return self.out(torch.cat([h, reads.flatten(1)], -1)), new

    def run(
        self, x: torch.Tensor, label_inputs: torch.Tensor, state: MemoryState | None = None
    ) -> tuple[torch.Tensor, MemoryState]:
        """Scores `[B, L, label_dim]` for sequences of examples `[B, L, ...]` with their label
        inputs `[B, L, label_dim]`, from a fresh memory unless `state` is given."""
        b, length = x.shape[:2]
        z = self.backbone.embed(x.flatten(0, 1)).view(b, length, -1)
        state = self.initial_state(b, z) if state is None else state
        outputs = []
        for t in range(length):
            out, state = self.step(state, z[:, t], label_inputs[:, t])
            outputs.append(out)
        return torch.stack(outputs, 1), state

    # -- labels ---------------------------------------------------------------------------
    def codes(self, batch: int, ways: int, generator: torch.Generator | None) -> torch.Tensor:
        """Per episode, distinct five-letter strings `[B, ways, 5]` for the classes."""
        total = STRING_LETTERS**STRING_LENGTH
        picks = torch.rand(batch, total, generator=generator).argsort(-1)[:, :ways]
        powers = STRING_LETTERS ** torch.arange(STRING_LENGTH - 1, -1, -1)
        return picks.unsqueeze(-1) // powers % STRING_LETTERS

    def encode(self, y: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        """Label vectors `[B, L, label_dim]` of class indices `[B, L]`."""
        if codes is None:
            return F.one_hot(y, self.ways).float()
        chars = torch.gather(codes, 1, y.unsqueeze(-1).expand(-1, -1, STRING_LENGTH))
        return F.one_hot(chars, STRING_LETTERS).flatten(-2).float()

    def class_scores(
        self, out: torch.Tensor, codes: torch.Tensor | None, ways: int
    ) -> torch.Tensor:
        """Log-probabilities `[B, L, ways]` of each class of the episode."""
        if codes is None:
            return out[..., :ways].log_softmax(-1)
        logp = out.unflatten(-1, (STRING_LENGTH, STRING_LETTERS)).log_softmax(-1)  # [B, L, 5, 5]
        index = codes.unsqueeze(1).expand(-1, logp.shape[1], -1, -1)  # [B, L, ways, 5]
        picked = torch.gather(logp, -1, index.transpose(-1, -2)).sum(-2)  # [B, L, ways]
        return picked

    def check_ways(self, ways: int) -> None:
        if ways > self.ways:
            raise DataError(
                f"this mann was built for at most {self.ways} classes per episode, got {ways}; "
                "set algorithm.ways to the largest number of ways"
            )

    # -- training and the per-instance protocol -------------------------------------------
    def sequence(
        self, batch: Episode, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each episode's examples (support and query together) in a random order, cut to
        `steps`: inputs `[B, L, ...]` and class indices `[B, L]`."""
        if not batch.batched:
            batch = Episode.stack([batch])
        x = torch.cat([batch.support_x, batch.query_x], 1)
        y = torch.cat([batch.support_y, batch.query_y], 1)
        b, n = y.shape
        length = n if self.steps is None else self.steps
        if length > n:
            raise DataError(
                f"mann sequences of {length} steps need {length} examples per episode, but the "
                f"episodes hold {n} (ways x (shots + queries)); raise the shots or queries"
            )
        order = torch.rand(b, n, generator=generator).argsort(-1)[:, :length].to(y.device)
        x = torch.gather(
            x, 1, order.view(b, length, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
        )
        return x, torch.gather(y, 1, order)

    def sequence_log_probs(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Class log-probabilities `[B, L, ways]` of a batch of labelled sequences."""
        ways = int(y.max()) + 1
        self.check_ways(ways)
        codes = (
            self.codes(y.shape[0], ways, generator).to(y.device)
            if self.labels == "string"
            else None
        )
        out, _ = self.run(x, delayed_labels(self.encode(y, codes)))
        return self.class_scores(out, codes, ways)

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = self.sequence(batch)
        if self.augment and self.training:
            flat = x.flatten(0, 1)
            flat = random_affine(flat, rotation=10.0, shear=0.0, scale=(1.0, 1.0), p=1.0)
            x = flat.view_as(x)
        logp = self.sequence_log_probs(x, y)
        loss = F.nll_loss(logp.flatten(0, 1).float(), y.flatten())
        acc = (logp.argmax(-1) == y).float().mean()
        return loss, {"loss": loss.item(), "accuracy": acc.item()}

    def instance_correct(
        self, episode: Episode, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's protocol on one episode: correctness and instance number of each step of
        a random sequence (the order and string labels drawn from `generator`)."""
        x, y = self.sequence(episode, generator)
        logp = self.sequence_log_probs(x, y, generator)
        return (logp.argmax(-1) == y)[0], instance_numbers(y)[0]

    # -- the common interface: support as a labelled prefix, queries after it -------------
    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> tuple:
        ways = int(support_y.max()) + 1
        self.check_ways(ways)
        # the support set in rounds (one example of each class, then the next...), as the
        # classes arrive in training sequences rather than all shots of a class in a row
        rank = instance_numbers(support_y.unsqueeze(0))[0]
        order = torch.argsort(rank * (ways + 1) + support_y, stable=True)
        x, y = support_x[order].unsqueeze(0), support_y[order].unsqueeze(0)
        generator = torch.Generator().manual_seed(0)
        codes = self.codes(1, ways, generator).to(y.device) if self.labels == "string" else None
        label_vectors = self.encode(y, codes)
        _, state = self.run(x, delayed_labels(label_vectors))
        return state, label_vectors[:, -1], codes, ways

    def logits(self, state: tuple, query_x: torch.Tensor) -> torch.Tensor:
        """Each query as the next step after the support prefix (queries do not see each
        other): log-probabilities `[Q, ways]`."""
        memory, last_label, codes, ways = state
        q = query_x.shape[0]
        z = self.backbone.embed(query_x)
        out, _ = self.step(memory.expand(q), z, last_label.expand(q, -1))
        codes = None if codes is None else codes.expand(q, -1, -1)
        return self.class_scores(out.unsqueeze(1), codes, ways)[:, 0]
