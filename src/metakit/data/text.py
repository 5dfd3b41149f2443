"""Few-shot text datasets: CLINC150 intents and FewRel relations, read from their JSON files.

Text is kept as strings with integer class labels (`TextDataset`); encoders turn them into
embeddings once (and cache them), after which episodes index a tensor like the image datasets.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metakit.data.store import Resource, locate
from metakit.errors import ArchiveStructureError, DataError

CLINC150 = Resource(
    "clinc150/data_full.json",
    "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json",
    md5="30c29dc6ab78edf3b5dfa640be204cde",
)
CLINC150_DOMAINS = Resource(
    "clinc150/domains.json",
    "https://raw.githubusercontent.com/clinc/oos-eval/master/data/domains.json",
    md5="9beee9d0f36e07e914c1e3a626bdcb4a",
)
_FEWREL = "https://raw.githubusercontent.com/thunlp/FewRel/master/data"
FEWREL = {
    domain: Resource(f"fewrel/val_{domain}.json", f"{_FEWREL}/val_{domain}.json", md5=md5)
    for domain, md5 in {
        "wiki": "3f25573428c0332cb64b367a275ab0c7",
        "pubmed": "cc5558e3ec43c69624ef26dec390ac8c",
        "nyt": "609192e317f18fdb624b837e64f4c7a6",
        "semeval": "25bf6df644c993a9b410dcde70a1b75b",
    }.items()
}
FEWREL_RELATIONS = {"wiki": 16, "pubmed": 10, "nyt": 25, "semeval": 17}
CLINC_INTENTS, CLINC_PER_INTENT = 150, {"train": 100, "val": 20, "test": 30}


@dataclass
class TextDataset:
    """Texts with labels `0..num_classes-1` and class names (one split of a text dataset)."""

    texts: list[str]
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != self.labels.shape[0]:
            raise ValueError("one label per text")

    @property
    def counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.class_names))

    def subset(self, classes: list[int], name: str) -> TextDataset:
        """The examples of `classes`, relabelled `0..len(classes)-1` in that order."""
        new = {c: i for i, c in enumerate(classes)}
        keep = [i for i, y in enumerate(self.labels.tolist()) if y in new]
        return TextDataset(
            [self.texts[i] for i in keep],
            torch.tensor([new[int(self.labels[i])] for i in keep]),
            [self.class_names[c] for c in classes],
            name=name,
        )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchiveStructureError(
            f"{path} is not valid JSON ({e}); delete it and fetch it again"
        ) from None


def clinc150_intents(download: bool = True) -> TextDataset:
    """All in-scope CLINC150 utterances (the published train, val and test pooled: 150 per
    intent), out-of-scope ones left out, checked against the published counts."""
    data = read_json(locate(CLINC150, download))
    texts, intents = [], []
    for part, per_intent in CLINC_PER_INTENT.items():
        rows = data.get(part)
        if not isinstance(rows, list) or len(rows) != CLINC_INTENTS * per_intent:
            raise ArchiveStructureError(
                f"clinc150 {part}: expected {CLINC_INTENTS * per_intent} [text, intent] pairs"
            )
        for text, intent in rows:
            texts.append(text)
            intents.append(intent)
    names = sorted(set(intents))
    if len(names) != CLINC_INTENTS:
        raise ArchiveStructureError(f"clinc150: expected 150 intents, found {len(names)}")
    index = {n: i for i, n in enumerate(names)}
    return TextDataset(texts, torch.tensor([index[i] for i in intents]), names, "clinc150")


def clinc150_domains(download: bool = True) -> dict[str, str]:
    """The domain of each of the 150 intents (e.g. `transfer` → `banking`)."""
    data = read_json(locate(CLINC150_DOMAINS, download))
    domain_of = {i: d for d, intents in data.items() for i in intents}
    if len(data) != 10 or len(domain_of) != CLINC_INTENTS:
        raise ArchiveStructureError(
            f"clinc150/domains.json: expected 10 domains with 150 intents, "
            f"found {len(data)} with {len(domain_of)}"
        )
    return domain_of


def clinc150_descriptions(
    names: list[str], style: str = "name", download: bool = True
) -> list[str]:
    """Readable class metadata text for intents: `name` ("change ai name") or `domain-name`
    ("meta: change ai name")."""
    if style not in ("name", "domain-name"):
        raise DataError(f"clinc150 class metadata must be 'name' or 'domain-name', got {style!r}")
    domain_of = clinc150_domains(download) if style == "domain-name" else {}
    text = [n.replace("_", " ") for n in names]
    if style == "name":
        return text
    return [f"{domain_of[n].replace('_', ' ')}: {t}" for n, t in zip(names, text, strict=True)]


def clinc150(
    seed: int = 0, sizes: tuple[int, int, int] = (80, 20, 50), download: bool = True
) -> dict[str, TextDataset]:
    """A seeded class split of the 150 intents into train / val / test (disjoint intents)."""
    if sum(sizes) != CLINC_INTENTS or min(sizes) < 1:
        raise DataError(f"class split sizes must be positive and sum to 150, got {sizes}")
    full = clinc150_intents(download)
    order = list(range(CLINC_INTENTS))
    random.Random(seed).shuffle(order)
    a, b = sizes[0], sizes[0] + sizes[1]
    parts = {"train": order[:a], "val": order[a:b], "test": order[b:]}
    return {
        split: full.subset(sorted(classes), f"clinc150/{split}") for split, classes in parts.items()
    }


def mark_entities(tokens: list[str], head: list[int], tail: list[int]) -> str:
    """The sentence with entity markers around the head and tail mentions:
    `[E1] head words [/E1] ... [E2] tail words [/E2]`."""
    out = []
    for i, token in enumerate(tokens):
        if i == head[0]:
            out.append("[E1]")
        if i == tail[0]:
            out.append("[E2]")
        out.append(token)
        if i == head[-1]:
            out.append("[/E1]")
        if i == tail[-1]:
            out.append("[/E2]")
    return " ".join(out)


def fewrel(domain: str = "wiki", markers: bool = True, download: bool = True) -> TextDataset:
    """One FewRel validation file (relations as classes); with `markers`, entity markers."""
    if domain not in FEWREL:
        raise DataError(f"unknown FewRel domain {domain!r}; use one of {', '.join(FEWREL)}")
    data = read_json(locate(FEWREL[domain], download))
    if not isinstance(data, dict) or len(data) != FEWREL_RELATIONS[domain]:
        raise ArchiveStructureError(
            f"fewrel {domain}: expected {FEWREL_RELATIONS[domain]} relations, "
            f"found {len(data) if isinstance(data, dict) else 'no mapping'}"
        )
    texts, labels = [], []
    names = sorted(data)
    for label, relation in enumerate(names):
        for inst in data[relation]:
            tokens = inst["tokens"]
            if markers:
                texts.append(mark_entities(tokens, inst["h"][2][0], inst["t"][2][0]))
            else:
                texts.append(" ".join(tokens))
            labels.append(label)
    return TextDataset(texts, torch.tensor(labels), names, f"fewrel/{domain}")
