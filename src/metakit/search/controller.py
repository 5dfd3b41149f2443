"""The RNN controller of Zoph & Le (2017) and its REINFORCE trainer, generic over a search space.

The controller emits a design token by token: at each decision an LSTM cell reads the embedding
of the previous choice (a learned start vector for the first), a per-decision linear head gives
logits, which are divided by a temperature and squashed by `tanh_constant * tanh(.)` (ENAS'
logit clipping, which keeps the policy from collapsing early). `RandomPolicy` has the same
`sample` interface and draws every decision uniformly: random search is the same loop with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metakit.errors import ConfigError
from metakit.search.space import SearchSpace


@dataclass
class Sample:
    """`n` designs: tokens `[n, D]`, their log-probability `[n]` and the policy's entropy summed
    over the decisions `[n]` (both differentiable for the controller, zeros for random)."""

    tokens: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor

    def designs(self) -> list[list[int]]:
        return self.tokens.tolist()


class Controller(nn.Module):
    """LSTM policy over a `SearchSpace`."""

    def __init__(
        self,
        space: SearchSpace,
        hidden: int = 64,
        temperature: float = 1.0,
        tanh_constant: float | None = 2.5,
    ) -> None:
        super().__init__()
        if hidden < 1 or temperature <= 0:
            raise ConfigError("controller hidden must be >= 1 and temperature > 0")
        if tanh_constant is not None and tanh_constant <= 0:
            raise ConfigError("controller tanh_constant must be positive (or None: no clipping)")
        self.space = space
        self.temperature, self.tanh_constant = temperature, tanh_constant
        self.start = nn.Parameter(torch.zeros(hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in space.sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden) for n in space.sizes)
        for p in self.parameters():  # ENAS' uniform init: an almost uniform policy at the start
            nn.init.uniform_(p, -0.1, 0.1)

    def logits(self, h: torch.Tensor, i: int) -> torch.Tensor:
        logits = self.heads[i](h) / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def forward(
        self,
        n: int = 1,
        generator: torch.Generator | None = None,
        tokens: torch.Tensor | None = None,
    ) -> Sample:
        """Sample `n` designs, or (with `tokens [n, D]`) score given ones (teacher forcing)."""
        if tokens is not None:
            tokens = torch.as_tensor(tokens, dtype=torch.long)
            if tokens.dim() != 2 or tokens.shape[1] != len(self.space):
                raise ConfigError(
                    f"tokens must be [n, {len(self.space)}] for this space, "
                    f"got {list(tokens.shape)}"
                )
            n = tokens.shape[0]
        hidden = self.start.shape[0]
        x = self.start.expand(n, hidden)
        h = c = x.new_zeros(n, hidden)
        chosen, log_prob, entropy = [], x.new_zeros(n), x.new_zeros(n)
        for i in range(len(self.space)):
            h, c = self.cell(x, (h, c))
            logp = F.log_softmax(self.logits(h, i), -1)
            if tokens is None:
                token = torch.multinomial(logp.detach().exp(), 1, generator=generator)[:, 0]
            else:
                token = tokens[:, i]
            chosen.append(token)
            log_prob = log_prob + logp.gather(1, token[:, None])[:, 0]
            entropy = entropy - (logp.exp() * logp).sum(-1)
            x = self.embeddings[i](token)
        return Sample(torch.stack(chosen, 1), log_prob, entropy)

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> Sample:
        return self(n, generator)

    @torch.no_grad()
    def probabilities(self, tokens: list[int]) -> float:
        """Probability of one design under the current policy."""
        return float(self(tokens=torch.tensor([tokens])).log_prob.exp())


class RandomPolicy:
    """Uniform over each decision: random search at an equal number of evaluations."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> Sample:
        tokens = torch.stack(
            [torch.randint(k, (n,), generator=generator) for k in self.space.sizes], 1
        )
        zeros = torch.zeros(n)
        return Sample(tokens, zeros, zeros)


class Reinforce:
    """REINFORCE with an exponential moving-average baseline and an entropy bonus; Adam on the
    controller. `step` takes the sample (with its graph) and the rewards of its designs."""

    def __init__(
        self,
        controller: Controller,
        lr: float = 3.5e-4,
        baseline_decay: float = 0.95,
        entropy_weight: float = 1e-4,
    ) -> None:
        if not 0 <= baseline_decay < 1:
            raise ConfigError(f"baseline_decay must lie in [0, 1), got {baseline_decay}")
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.baseline_decay, self.entropy_weight = baseline_decay, entropy_weight
        self.baseline: float | None = None

    def loss(self, sample: Sample, rewards: torch.Tensor) -> torch.Tensor:
        baseline = float(rewards.mean()) if self.baseline is None else self.baseline
        advantage = rewards.detach() - baseline
        return -(advantage * sample.log_prob).mean() - self.entropy_weight * sample.entropy.mean()

    def step(self, sample: Sample, rewards: torch.Tensor) -> dict[str, float]:
        rewards = torch.as_tensor(rewards, dtype=torch.float32)
        loss = self.loss(sample, rewards)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        mean = float(rewards.mean())
        self.baseline = (
            mean
            if self.baseline is None
            else self.baseline_decay * self.baseline + (1 - self.baseline_decay) * mean
        )
        return {"controller_loss": loss.item(), "baseline": self.baseline}
