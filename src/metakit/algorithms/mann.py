"""Memory-augmented neural network (Santoro et al. 2016): an LSTM controller with an external
memory written by Least Recently Used Access (LRUA) and read by content.

An episode is one sequence of `(x_t, y_{t-1})`: the label of each example arrives one step
late (the first step gets a null label), so the network must bind an image to its label in
memory and recall it at the next presentation of the class. The memory is reset for every
episode. Labels are one-hot, or (`labels: string`) the paper's five-character strings over a
five-letter alphabet, one random string per class and episode.

Step t (per read head r; usage is shared by the heads):
  k_t = tanh(W_k h_t),  a_t = tanh(W_a h_t),  alpha_t = W_alpha h_t
  w^w_t = sigmoid(alpha_t) w^r_{t-1} + (1 - sigmoid(alpha_t)) w^lu_{t-1}
  M_{t-1}(least-used slots) <- 0;   M_t = M_{t-1} + sum_r w^w_t a_t^T
  w^r_t = softmax_i(beta_t cos(k_t, M_t(i))),  r_t = sum_i w^r_t(i) M_t(i)
  w^u_t = gamma w^u_{t-1} + sum_r (w^r_t + w^w_t)
w^lu_t gives head r the r-th least-used slot (1 there, 0 elsewhere): together the heads write
the n smallest usages (n = heads), each to its own slot, and each of those slots is zeroed before
the write. Were every head to add into all n slots, the n slots would hold the same sum and
the memory would store a quarter of what it can.
`write: add` (default) writes a separate add vector a_t, as the reference implementations that
reproduce the paper do; `write: key` writes k_t itself, as the equations are printed. Writing
the key, the slot just written has cosine 1 with the key and the read returns mostly the
controller's own key (an earlier run writing keys stayed at chance after 2,000 steps).
`read_from: written` (default) addresses M_t, as printed; `previous` addresses M_{t-1} and
reads M_t under those weights.
`key_strength: false` fixes beta = 1 (the paper's plain softmax over cosines); the default learns
beta >= 1 per head as the NTM does, starting at `strength_init` (10): a softmax over 128 cosines
in [-1, 1] is nearly flat at beta ~ 1, so a read returns an average of the memory and carries
little gradient to the keys (measured: 5 classes, meta-batch 16, the plateau at elimination
accuracy — 2nd instance 31% — held for 1,600 steps with beta starting at 1.7; with beta starting
at 9 it broke at ~800 steps, 2nd instance 48% at 1,000).
"""

from __future__ import annotations

import math
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
    least_used: torch.Tensor  # w^lu [B, heads, slots]
    reads: torch.Tensor  # r [B, heads, width]

    def expand(self, n: int) -> MemoryState:
        """The single state of one episode repeated `n` times (independent continuations)."""
        return MemoryState(*(t.expand(n, *t.shape[1:]) for t in vars(self).values()))


def least_used_weights(usage: torch.Tensor, n: int) -> torch.Tensor:
    """`[B, n, N]`: row r is 1 at the r-th smallest usage of `usage` `[B, N]`, 0 elsewhere."""
    index = usage.topk(n, dim=-1, largest=False, sorted=True).indices
    return F.one_hot(index, usage.shape[-1]).to(usage.dtype)


def lrua_write(
    memory: torch.Tensor,
    read_weights: torch.Tensor,
    least_used: torch.Tensor,
    values: torch.Tensor,
    alpha: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write weights `[B, R, N]` and the memory after the write: the heads' least-used slots
    (`least_used` `[B, R, N]`, from the previous usage) are zeroed, then each head adds its
    value `[B, R, W]` under its write weights."""
    gate = torch.sigmoid(alpha).unsqueeze(-1)  # [B, R, 1]
    write = gate * read_weights + (1 - gate) * least_used
    keep = 1 - least_used.sum(1).clamp(max=1)  # [B, N]
    memory = memory * keep.unsqueeze(-1) + torch.einsum("brn,brw->bnw", write, values)
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
        strength_init: float = 10.0,
        write: Literal["add", "key"] = "add",
        read_from: Literal["previous", "written"] = "written",
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
        if write not in ("add", "key"):
            raise ConfigError(f"mann write must be 'add' or 'key', got {write!r}")
        self.add_width = width if write == "add" else 0
        # per head: key, add vector (write: add), write gate alpha, key strength
        self.interface = nn.Linear(controller, heads * (width + self.add_width + 2))
        self.out = nn.Linear(controller + heads * width, self.label_dim)
        self.key_strength = key_strength
        if key_strength:
            if strength_init <= 1:
                raise ConfigError(f"mann strength_init must exceed 1, got {strength_init}")
            with torch.no_grad():  # beta = softplus(b) + 1 = strength_init at the start
                bias = self.interface.bias.view(heads, width + self.add_width + 2)
                bias[:, -1] = math.log(math.expm1(strength_init - 1))
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
        w, a = self.width, self.add_width
        iface = self.interface(h).view(b, self.heads, w + a + 2)
        keys = torch.tanh(iface[..., :w])
        values = torch.tanh(iface[..., w : w + a]) if a else keys
        alpha = iface[..., w + a]
        strength = (
            F.softplus(iface[..., w + a + 1]) + 1 if self.key_strength else torch.ones_like(alpha)
        )
        write, memory = lrua_write(
            state.memory, state.read_weights, state.least_used, values, alpha
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
