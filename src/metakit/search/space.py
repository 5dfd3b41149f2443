"""A declared search space: an ordered sequence of categorical decisions.

A design is one choice per decision, written as token indices. Decisions may be conditioned on
earlier structure: a skip-connection decision names the layer it feeds and the earlier layer it
reads from, and the space refuses a skip from a layer that does not come before. The controller
emits the decisions in order, each conditioned on the ones before, so a space only has to say
what the decisions are; what a design means is up to whoever builds it (a network, an update
rule, an activation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from metakit.errors import ConfigError


@dataclass(frozen=True)
class Decision:
    """One categorical decision. `layer`/`source` mark a skip connection into `layer` from the
    earlier layer `source` (choices then `("no", "yes")`)."""

    name: str
    choices: tuple[str, ...]
    layer: int | None = None
    source: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a search decision needs a name")
        if len(self.choices) == 0:
            raise ConfigError(f"search decision {self.name!r} has no choices; give at least one")
        if len(set(self.choices)) != len(self.choices):
            raise ConfigError(f"search decision {self.name!r} repeats a choice: {self.choices}")
        if (self.layer is None) != (self.source is None):
            raise ConfigError(f"skip decision {self.name!r} needs both a layer and a source")
        if self.layer is not None and self.source is not None and not 0 <= self.source < self.layer:
            raise ConfigError(
                f"skip decision {self.name!r} connects layer {self.source} into layer "
                f"{self.layer}; a skip must come from an earlier layer (0 <= source < layer)"
            )


@dataclass(frozen=True)
class SearchSpace:
    """The decisions in the order the controller emits them."""

    decisions: tuple[Decision, ...]

    def __post_init__(self) -> None:
        if not self.decisions:
            raise ConfigError("a search space needs at least one decision")
        names = [d.name for d in self.decisions]
        if len(set(names)) != len(names):
            raise ConfigError(f"search decision names must be unique, got {names}")

    def __len__(self) -> int:
        return len(self.decisions)

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.decisions)

    @property
    def sizes(self) -> list[int]:
        return [len(d.choices) for d in self.decisions]

    def size(self) -> int:
        """Number of distinct designs."""
        total = 1
        for n in self.sizes:
            total *= n
        return total

    def check(self, tokens: Sequence[int]) -> list[int]:
        """The tokens as ints, after checking there is one valid index per decision."""
        tokens = [int(t) for t in tokens]
        if len(tokens) != len(self.decisions):
            raise ConfigError(
                f"a design of this space has {len(self.decisions)} tokens, got {len(tokens)}"
            )
        for t, d in zip(tokens, self.decisions, strict=True):
            if not 0 <= t < len(d.choices):
                raise ConfigError(f"token {t} is not a choice of {d.name!r} ({len(d.choices)})")
        return tokens

    def describe(self, tokens: Sequence[int]) -> dict[str, str]:
        """`{decision name: chosen label}` of a design."""
        return {
            d.name: d.choices[t] for d, t in zip(self.decisions, self.check(tokens), strict=True)
        }


def categorical(name: str, choices: Sequence[str]) -> Decision:
    return Decision(name, tuple(choices))


def skip(layer: int, source: int) -> Decision:
    """Whether layer `layer` also adds the output of the earlier layer `source`."""
    return Decision(f"skip{layer}_{source}", ("no", "yes"), layer=layer, source=source)
