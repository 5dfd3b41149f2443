"""Text datasets as episode sources over frozen-encoder embeddings (computed once, cached).

`clinc150`: a seeded split of the 150 intents into train / val / test intents.
`fewrel`: `test` is one FewRel val domain (default wiki); `train` / `val` are a seeded relation
split of the other domains present, without the test domain's relations, for meta-training
that never sees a test relation.
"""

from __future__ import annotations

import random

import torch

from metakit.data.dataset import ClassDataset, SplitDataset
from metakit.data.text import FEWREL, TextDataset, clinc150, clinc150_descriptions, fewrel
from metakit.errors import DataError
from metakit.text.encoder import DIM, Pool, dim_of, embed_texts, embedding_split, states_width


def clinc150_embeddings(
    seed: int = 0,
    sizes: tuple[int, int, int] = (80, 20, 50),
    download: bool = True,
    support: str = "examples",
    layer: int | None = None,
) -> SplitDataset:
    """`support: examples` gives N-way K-shot episodes; `name` or `domain-name` gives zero-shot
    episodes whose classes are given by the embedded intent name (optionally with its domain).

    Examples are sentence embeddings `[N, 384]`, or with `layer: k` the token states after the
    encoder's first k layers `[N, tokens, 384]`, for fine-tuning the layers above (`minilm`)."""
    if support not in ("examples", "name", "domain-name"):
        raise DataError(
            f"clinc150 support must be 'examples', 'name' or 'domain-name', got {support!r}"
        )
    cache: dict[str, dict[str, TextDataset]] = {}

    def parts() -> dict[str, TextDataset]:
        if "parts" not in cache:
            cache["parts"] = clinc150(seed, tuple(sizes), download)  # type: ignore[arg-type]
        return cache["parts"]

    def trainval() -> TextDataset:  # seen + val intents, for a fixed schedule chosen on val
        return pooled([parts()["train"], parts()["val"]], "clinc150/trainval")

    def metadata(name: str) -> torch.Tensor:
        data = trainval() if name == "trainval" else parts()[name]
        names = [n.rsplit("/", 1)[-1] for n in data.class_names]  # pooled: "clinc150/train/x"
        return embed_texts(clinc150_descriptions(names, support, download))

    texts = {s: (lambda s=s: parts()[s]) for s in ("train", "val", "test")}
    texts["trainval"] = trainval
    return SplitDataset(
        name=f"clinc150(seed={seed})",
        preprocess=None,
        builders={
            s: (lambda s=s: embedding_split(texts[s](), layer=layer))
            for s in ("train", "val", "trainval", "test")
        },
        features=DIM,
        metadata=None if support == "examples" else metadata,
        input_options={} if layer is None else {"start_layer": layer},
    )


def pooled(parts: list[TextDataset], name: str) -> TextDataset:
    texts, labels, names = [], [], []
    for part in parts:
        texts += part.texts
        labels.append(part.labels + len(names))
        names += [f"{part.name}/{c}" for c in part.class_names]
    return TextDataset(texts, torch.cat(labels), names, name)


def fewrel_embeddings(
    domain: str = "wiki",
    pool: Pool = "entity",
    download: bool = False,
    layer: int | None = None,
    val_relations: int = 8,
    seed: int = 0,
) -> SplitDataset:
    """`pool`: `entity` (sentence, head and tail means), `start` (sentence mean and the states
    at punctuation marks opening the head and tail), `markers` or `mean`; see `encode`.
    With `layer: k`, examples are token states after k encoder layers (plus mention channels
    for `entity` and `start`), for fine-tuning the layers above (`minilm` with the same pool).

    `test` is the `domain`'s file. `train` and `val` (a seeded split, `val_relations` for
    checkpoint choice) pool the other domains present, without their relations that also occur
    in `domain` (val_nyt shares 8 Wikidata relations with val_wiki), so meta-training never
    sees a test relation; `trainval` is both."""
    if pool not in ("mean", "markers", "entity", "start"):
        raise DataError(f"fewrel pool must be 'mean', 'markers', 'entity' or 'start', got {pool!r}")
    markers = pool != "mean"
    if domain not in FEWREL:
        raise DataError(f"unknown FewRel domain {domain!r}; use one of {', '.join(FEWREL)}")
    if layer is not None and pool == "markers":
        raise DataError("fewrel token states (`layer`) need pool 'entity', 'start' or 'mean'")
    cache: dict[str, dict[str, TextDataset]] = {}
    width = dim_of(pool) if layer is None else states_width(pool)

    def test() -> ClassDataset:
        return embedding_split(fewrel(domain, markers, download), pool, layer)

    def parts() -> dict[str, TextDataset]:
        if "parts" not in cache:
            cache["parts"] = fewrel_training(domain, markers, download, val_relations, seed)
        return cache["parts"]

    return SplitDataset(
        name=f"fewrel({domain})",
        preprocess=None,
        builders={
            s: (lambda s=s: embedding_split(parts()[s], pool, layer))
            for s in ("train", "val", "trainval")
        }
        | {"test": test},
        features=width,
        input_options={} if layer is None else {"start_layer": layer, "pool": pool},
    )


def fewrel_training(
    domain: str, markers: bool, download: bool, val_relations: int, seed: int
) -> dict[str, TextDataset]:
    """The FewRel domains other than `domain`, pooled, minus `domain`'s relations, split by
    relation (seeded) into `train` and `val`."""
    held_out = set(fewrel(domain, markers, download).class_names)
    others = []
    for other in FEWREL:
        if other == domain:
            continue
        try:
            others.append(fewrel(other, markers, download))
        except DataError:
            continue  # a domain that is not present locally
    if not others:
        raise DataError(f"no FewRel domain other than {domain!r} is present to train on")
    pool = pooled(others, f"fewrel/not-{domain}")
    keep = [i for i, n in enumerate(pool.class_names) if n.rsplit("/", 1)[-1] not in held_out]
    if not 0 <= val_relations <= len(keep) - 5:
        raise DataError(
            f"fewrel val_relations must lie in 0..{len(keep) - 5} (training keeps at least 5 of "
            f"the {len(keep)} relations outside {domain!r}), got {val_relations}"
        )
    order = list(keep)
    random.Random(seed).shuffle(order)
    val, train = sorted(order[:val_relations]), sorted(order[val_relations:])
    name = f"fewrel/not-{domain}"
    return {
        "train": pool.subset(train, f"{name}/train"),
        "val": pool.subset(val, f"{name}/val"),
        "trainval": pool.subset(sorted(keep), name),
    }
