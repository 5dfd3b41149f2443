"""Expressions of the form b(u1(op1), u2(op2)), emitted token by token and compiled to torch.

A `Grammar` names its operands, unary and binary functions. An expression of depth `d` has `d`
groups: the first is `b(u1(op1), u2(op2))`; each later group takes the previous group's value
as its first operand, `b'(u1'(previous), u2'(op))`. Depth 2 is "nested once more"; depth 3
spells AddSign, `(1 + sign(g) sign(m)) g`. An expression's tokens are a design of the grammar's
`space()`, so the RNN controller of `metakit.search.controller` searches it directly.

`Expression.check` runs a candidate on probe inputs and rejects it, with a reason, when its
output is not finite, has the wrong shape, or is constant (ignores its inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from metakit.errors import ConfigError
from metakit.search.space import SearchSpace, categorical

Unary = Callable[..., torch.Tensor]  # (x, beta) -> tensor
Binary = Callable[..., torch.Tensor]  # (x, y, beta) -> tensor


@dataclass(frozen=True)
class Fn:
    """A function of the grammar and how it is written in a formula (`{x}`, `{y}`, `{b}`).

    For brackets: `needs` is the least precedence each argument must have to go in bare (1 sums,
    2 products, 3 atoms and calls), `gives` the precedence of the result (None: the argument's).
    """

    fn: Callable[..., torch.Tensor]
    text: str
    needs: tuple[int, int] = (0, 0)
    gives: int | None = 3


@dataclass(frozen=True)
class Grammar:
    operands: tuple[str, ...]
    unary: Mapping[str, Fn]
    binary: Mapping[str, Fn]
    depth: int = 1
    operand_text: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 4:
            raise ConfigError(f"expression depth must lie in 1..4, got {self.depth}")
        for what, items in (("operands", self.operands), ("unary", self.unary)):
            if not items:
                raise ConfigError(f"a grammar needs {what}")
        if not self.binary:
            raise ConfigError("a grammar needs binary functions")

    def space(self) -> SearchSpace:
        """Decisions in emission order: per group the operands, their unaries, the binary."""
        return self._space

    @cached_property
    def _space(self) -> SearchSpace:  # built once: expressions consult it on every call
        ops, un, bi = list(self.operands), list(self.unary), list(self.binary)
        decisions = [
            categorical("op1", ops),
            categorical("op2", ops),
            categorical("u1", un),
            categorical("u2", un),
            categorical("b", bi),
        ]
        for k in range(2, self.depth + 1):
            decisions += [
                categorical(f"u1_{k}", un),
                categorical(f"op2_{k}", ops),
                categorical(f"u2_{k}", un),
                categorical(f"b_{k}", bi),
            ]
        return SearchSpace(tuple(decisions))

    def expression(self, tokens: Sequence[int]) -> Expression:
        return Expression(self, tuple(self.space().check(tokens)))

    def tokens(self, *groups: Sequence[str]) -> list[int]:
        """Tokens from names: `(op1, op2, u1, u2, b)`, then `(u1, op2, u2, b)` per later group."""
        space = self.space()
        names = [n for group in groups for n in group]
        if len(names) != len(space):
            raise ConfigError(f"depth {self.depth} needs {len(space)} names, got {len(names)}")
        out = []
        for name, d in zip(names, space, strict=True):
            if name not in d.choices:
                raise ConfigError(f"{name!r} is not a choice of {d.name} ({', '.join(d.choices)})")
            out.append(d.choices.index(name))
        return out


@dataclass(frozen=True)
class Expression:
    grammar: Grammar
    tokens: tuple[int, ...]

    def parts(self) -> list[tuple[str, str, str, str, str]]:
        """Per group `(first operand, second operand, u1, u2, binary)` names; later groups'
        first operand is `"previous"`."""
        return self._parts

    @cached_property
    def _parts(self) -> list[tuple[str, str, str, str, str]]:  # once, not per update step
        chosen = list(self.grammar.space().describe(self.tokens).values())
        groups = [(chosen[0], chosen[1], chosen[2], chosen[3], chosen[4])]
        for k in range(1, self.grammar.depth):
            u1, op2, u2, b = chosen[5 + 4 * (k - 1) : 9 + 4 * (k - 1)]
            groups.append(("previous", op2, u1, u2, b))
        return groups

    def __call__(
        self, operands: Mapping[str, torch.Tensor], beta: torch.Tensor | float = 1.0
    ) -> torch.Tensor:
        g = self.grammar
        value: torch.Tensor | None = None
        for op1, op2, u1, u2, b in self.parts():
            x = value if op1 == "previous" else operands[op1]
            left = g.unary[u1].fn(x, beta)
            right = g.unary[u2].fn(operands[op2], beta)
            value = g.binary[b].fn(left, right, beta)
        assert value is not None
        return value

    def formula(self) -> str:
        g = self.grammar
        text = dict(g.operand_text or {})

        def put(arg: tuple[str, int], need: int) -> str:
            return arg[0] if arg[1] >= need else f"({arg[0]})"

        def atom(name: str) -> tuple[str, int]:
            t = text.get(name, name)
            return t, 3 if t.replace(".", "").isalnum() or t.endswith(")") else 2

        def unary(f: Fn, arg: tuple[str, int]) -> tuple[str, int]:
            return f.text.format(x=put(arg, f.needs[0]), b="β"), arg[
                1
            ] if f.gives is None else f.gives

        value: tuple[str, int] = ("", 3)
        for op1, op2, u1, u2, b in self.parts():
            left = unary(g.unary[u1], value if op1 == "previous" else atom(op1))
            right = unary(g.unary[u2], atom(op2))
            f = g.binary[b]
            x, y = put(left, f.needs[0]), put(right, f.needs[1])
            value = f.text.format(x=x, y=y, b="β"), left[1] if f.gives is None else f.gives
        return value[0]

    def __str__(self) -> str:
        return self.formula()

    def check(self, probes: Sequence[Mapping[str, torch.Tensor]], shape: torch.Size) -> str | None:
        """None if the expression is usable, else why not: it must give finite values of
        `shape` on every probe and not the same output for all of them."""
        outputs = []
        for probe in probes:
            try:
                with torch.no_grad():
                    out = self(probe)
            except (RuntimeError, ValueError, ZeroDivisionError) as e:
                return f"fails on probe inputs ({e})"
            out = torch.as_tensor(out)
            if out.shape != shape:
                out = out.expand(shape) if out.numel() == 1 else out
                if out.shape != shape:
                    return f"output shape {list(out.shape)} is not {list(shape)}"
            if not torch.isfinite(out).all():
                return "not finite on probe inputs (NaN or inf)"
            outputs.append(out)
        first = outputs[0]
        if all(torch.allclose(o, first, rtol=1e-6, atol=1e-9) for o in outputs[1:]) and bool(
            (first - first.flatten()[0]).abs().max() < 1e-9
        ):
            return "constant output (does not depend on its inputs)"
        return None


def _safe_div(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    return x / (y + eps)


def _ones(x: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(x)


# -- the optimizer grammar (Bello et al. 2017) -----------------------------------------------
OPTIMIZER_OPERANDS = (
    "g", "g2", "g3", "m", "v", "gamma", "sign_g", "sign_m", "one", "two", "eps",
    "w4", "w3", "w2", "w1", "adam", "rmsprop",
)  # fmt: skip
OPTIMIZER_OPERAND_TEXT = {
    "g": "g", "g2": "g²", "g3": "g³", "m": "m̂", "v": "v̂", "gamma": "γ̂", "sign_g": "sign(g)",
    "sign_m": "sign(m̂)", "one": "1", "two": "2", "eps": "ε", "w4": "1e-4·w", "w3": "1e-3·w",
    "w2": "1e-2·w", "w1": "1e-1·w", "adam": "adam", "rmsprop": "rmsprop",
}  # fmt: skip


def _drop(p: float) -> Callable[..., torch.Tensor]:
    def fn(x: torch.Tensor, beta: object) -> torch.Tensor:
        return x * (torch.rand_like(x) >= p)

    return fn


OPTIMIZER_UNARY: dict[str, Fn] = {
    "x": Fn(lambda x, b: x, "{x}", gives=None),
    "neg": Fn(lambda x, b: -x, "-{x}", (2, 0), 2),
    "exp": Fn(lambda x, b: torch.exp(x), "exp({x})"),
    "log": Fn(lambda x, b: torch.log(x.abs()), "log|{x}|"),
    "sqrt": Fn(lambda x, b: x.abs().sqrt(), "√|{x}|"),
    "clip5": Fn(lambda x, b: x.clamp(-1e-5, 1e-5), "clip({x}, 1e-5)"),
    "clip4": Fn(lambda x, b: x.clamp(-1e-4, 1e-4), "clip({x}, 1e-4)"),
    "clip3": Fn(lambda x, b: x.clamp(-1e-3, 1e-3), "clip({x}, 1e-3)"),
    "drop1": Fn(_drop(0.1), "drop({x}, 0.1)"),
    "drop3": Fn(_drop(0.3), "drop({x}, 0.3)"),
    "drop5": Fn(_drop(0.5), "drop({x}, 0.5)"),
    "sign": Fn(lambda x, b: torch.sign(x), "sign({x})"),
}
OPTIMIZER_BINARY: dict[str, Fn] = {
    "add": Fn(lambda x, y, b: x + y, "{x} + {y}", (1, 1), 1),
    "sub": Fn(lambda x, y, b: x - y, "{x} - {y}", (1, 2), 1),
    "mul": Fn(lambda x, y, b: x * y, "{x}·{y}", (2, 2), 2),
    "div": Fn(lambda x, y, b: _safe_div(x, y, 1e-8), "{x}/({y} + δ)", (2, 1), 2),
    "pow": Fn(lambda x, y, b: torch.pow(x, y), "{x}^{y}", (3, 3), 3),
    "keep": Fn(lambda x, y, b: x, "{x}", gives=None),
}


def optimizer_grammar(depth: int = 3) -> Grammar:
    return Grammar(
        OPTIMIZER_OPERANDS, OPTIMIZER_UNARY, OPTIMIZER_BINARY, depth, OPTIMIZER_OPERAND_TEXT
    )


# -- the activation grammar (Ramachandran et al. 2017) -----------------------------------------
ACT_EPS = 1e-3

ACTIVATION_UNARY: dict[str, Fn] = {
    "x": Fn(lambda x, b: x, "{x}", gives=None),
    "neg": Fn(lambda x, b: -x, "-{x}", (2, 0), 2),
    "abs": Fn(lambda x, b: x.abs(), "|{x}|"),
    "square": Fn(lambda x, b: x * x, "{x}²", (3, 0)),
    "cube": Fn(lambda x, b: x * x * x, "{x}³", (3, 0)),
    "sqrt": Fn(lambda x, b: x.abs().sqrt(), "√|{x}|"),
    "beta_x": Fn(lambda x, b: b * x, "{b}{x}", (3, 0), 2),
    "x_plus_beta": Fn(lambda x, b: x + b, "{x} + {b}", (1, 0), 1),
    "log": Fn(lambda x, b: torch.log(x.abs() + ACT_EPS), "log(|{x}| + ε)"),
    "exp": Fn(lambda x, b: torch.exp(x), "exp({x})"),
    "sin": Fn(lambda x, b: torch.sin(x), "sin({x})"),
    "cos": Fn(lambda x, b: torch.cos(x), "cos({x})"),
    "sinh": Fn(lambda x, b: torch.sinh(x), "sinh({x})"),
    "cosh": Fn(lambda x, b: torch.cosh(x), "cosh({x})"),
    "tanh": Fn(lambda x, b: torch.tanh(x), "tanh({x})"),
    "asinh": Fn(lambda x, b: torch.asinh(x), "asinh({x})"),
    "atan": Fn(lambda x, b: torch.atan(x), "atan({x})"),
    "sinc": Fn(lambda x, b: torch.sinc(x / math.pi), "sinc({x})"),
    "relu": Fn(lambda x, b: x.clamp_min(0), "max({x}, 0)"),
    "min0": Fn(lambda x, b: x.clamp_max(0), "min({x}, 0)"),
    "sigmoid": Fn(lambda x, b: torch.sigmoid(x), "σ({x})"),
    "softplus": Fn(lambda x, b: torch.nn.functional.softplus(x), "log(1 + exp({x}))"),
    "gauss": Fn(lambda x, b: torch.exp(-x * x), "exp(-{x}²)"),
    "erf": Fn(lambda x, b: torch.erf(x), "erf({x})"),
    "beta": Fn(lambda x, b: b * _ones(x), "{b}"),
}
ACTIVATION_BINARY: dict[str, Fn] = {
    "add": Fn(lambda x, y, b: x + y, "{x} + {y}", (1, 1), 1),
    "mul": Fn(lambda x, y, b: x * y, "{x}·{y}", (2, 2), 2),
    "sub": Fn(lambda x, y, b: x - y, "{x} - {y}", (1, 2), 1),
    "div": Fn(lambda x, y, b: x / (y + ACT_EPS), "{x}/({y} + ε)", (2, 1), 2),
    "max": Fn(lambda x, y, b: torch.maximum(x, y), "max({x}, {y})"),
    "min": Fn(lambda x, y, b: torch.minimum(x, y), "min({x}, {y})"),
    "sigmoid_mul": Fn(lambda x, y, b: torch.sigmoid(x) * y, "σ({x})·{y}", (0, 2), 2),
    "gauss_diff": Fn(lambda x, y, b: torch.exp(-b * (x - y) ** 2), "exp(-{b}({x} - {y})²)", (1, 2)),
    "laplace_diff": Fn(
        lambda x, y, b: torch.exp(-b * (x - y).abs()), "exp(-{b}|{x} - {y}|)", (1, 2)
    ),
    "mix": Fn(lambda x, y, b: b * x + (1 - b) * y, "{b}{x} + (1 - {b}){y}", (3, 3), 1),
}


def activation_grammar(depth: int = 1) -> Grammar:
    return Grammar(("x",), ACTIVATION_UNARY, ACTIVATION_BINARY, depth, {"x": "x"})
