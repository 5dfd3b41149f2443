"""CLINC150 and FewRel loaders, checked against the counts of the shared copies."""

import pytest
import torch

from metakit.data.store import data_root
from metakit.data.text import clinc150, clinc150_intents, fewrel, mark_entities
from metakit.errors import DataError

needs_clinc = pytest.mark.skipif(
    not (data_root() / "clinc150" / "data_full.json").exists(), reason="CLINC150 not present"
)
needs_fewrel = pytest.mark.skipif(
    not (data_root() / "fewrel" / "val_wiki.json").exists(), reason="FewRel not present"
)


@needs_clinc
def test_clinc150_counts_and_seeded_class_split():
    full = clinc150_intents(download=False)
    assert len(full.class_names) == 150 and len(full.texts) == 22500
    assert full.counts.tolist() == [150] * 150
    splits = clinc150(seed=0, download=False)
    sizes = {k: len(v.class_names) for k, v in splits.items()}
    assert sizes == {"train": 80, "val": 20, "test": 50}
    names = [set(v.class_names) for v in splits.values()]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert splits["test"].counts.tolist() == [150] * 50
    again = clinc150(seed=0, download=False)
    assert again["test"].class_names == splits["test"].class_names
    assert clinc150(seed=1, download=False)["test"].class_names != splits["test"].class_names
    with pytest.raises(DataError, match="sum to 150"):
        clinc150(sizes=(100, 20, 20), download=False)


@needs_fewrel
@pytest.mark.parametrize(
    ("domain", "relations", "instances"),
    [("wiki", 16, 11200), ("pubmed", 10, 1000), ("nyt", 25, 2500), ("semeval", 17, 8851)],
)
def test_fewrel_counts(domain, relations, instances):
    data = fewrel(domain, download=False)
    assert len(data.class_names) == relations and len(data.texts) == instances
    if domain == "wiki":
        assert data.counts.tolist() == [700] * 16
        assert all("[E1]" in t and "[/E2]" in t for t in data.texts[:50])
    assert int(data.labels.max()) == relations - 1 and data.labels.dtype == torch.int64


def test_mark_entities():
    tokens = ["Paris", "is", "the", "capital", "of", "France", "."]
    assert (
        mark_entities(tokens, [0], [5]) == "[E1] Paris [/E1] is the capital of [E2] France [/E2] ."
    )
    assert mark_entities(["a", "b", "c"], [1, 2], [0]) == "[E2] a [/E2] [E1] b c [/E1]"


def test_split_entities_strips_markers_and_finds_mentions():
    from metakit.text.encoder import split_entities

    text = mark_entities(["The", "Cape", "Bridge", "crosses", "the", "Mississippi"], [1, 2], [5])
    words, head, tail = split_entities(text)
    assert words == ["The", "Cape", "Bridge", "crosses", "the", "Mississippi"]
    assert head == [1, 2] and tail == [5]
    words, head, tail = split_entities(text, start=True)  # punctuation marks, their indices
    assert words == ["The", "@", "Cape", "Bridge", "@", "crosses", "the", "#", "Mississippi", "#"]
    assert head == [1] and tail == [7]


@needs_clinc
def test_clinc150_dataset_splits_and_name_metadata(monkeypatch):
    """trainval pools the seen and val intents; zero-shot metadata embeds readable names."""
    import metakit.text.datasets as td
    from metakit.data.dataset import ClassDataset

    embedded: list[list[str]] = []

    def fake_split(data, pool="mean", layer=None):  # no encoder needed: one number per text
        return ClassDataset(torch.zeros(len(data.texts), 4), data.labels, data.class_names)

    def fake_embed(texts, pool="mean", batch_size=64):
        embedded.append(list(texts))
        return torch.zeros(len(texts), 4)

    monkeypatch.setattr(td, "embedding_split", fake_split)
    monkeypatch.setattr(td, "embed_texts", fake_embed)
    data = td.clinc150_embeddings(download=False, support="domain-name")
    trainval = data.split("trainval")
    assert trainval.num_classes == 100 and len(trainval) == 15000
    assert data.task == "zero-shot" and data.inputs == {"in_features": 384}
    data.metadata("trainval")
    assert len(embedded[-1]) == 100 and all(": " in t and "_" not in t for t in embedded[-1])
    with pytest.raises(DataError, match="support must be"):
        td.clinc150_embeddings(download=False, support="pictures")


@needs_fewrel
def test_fewrel_training_relations_never_include_a_test_relation():
    from metakit.text.datasets import fewrel_training

    parts = fewrel_training("wiki", markers=True, download=False, val_relations=8, seed=0)
    test = set(fewrel("wiki", download=False).class_names)
    relation = {s: {n.rsplit("/", 1)[-1] for n in d.class_names} for s, d in parts.items()}
    # nyt's 25 minus the 8 Wikidata relations val_wiki shares, pubmed's 10, semeval's 17
    assert (len(relation["train"]), len(relation["val"]), len(relation["trainval"])) == (36, 8, 44)
    assert not relation["trainval"] & test and len(test & {"P413", "P463", "P921"}) == 3
    assert not relation["train"] & relation["val"]
    assert relation["train"] | relation["val"] == relation["trainval"]
    assert len(parts["trainval"].texts) == 2500 - 800 + 1000 + 8851
    again = fewrel_training("wiki", markers=True, download=False, val_relations=8, seed=0)
    assert again["val"].class_names == parts["val"].class_names
    with pytest.raises(DataError, match="val_relations"):
        fewrel_training("wiki", markers=True, download=False, val_relations=40, seed=0)
