"""`minilm`: the top transformer layers of all-MiniLM-L6-v2 as a trainable backbone.

Its input is a text's token states after the frozen bottom layers (`[N, tokens, 384]`, zero
rows as padding), as cached by the text datasets with `layer: k`; it runs the pretrained layers
`k..5` and mean-pools and L2-normalises like the sentence encoder, so before any training it
reproduces the frozen encoder's embeddings. Fine-tuning only the top layers on cached states
is what makes few-shot text training affordable on a CPU.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from metakit.errors import ConfigError
from metakit.models.backbone import Backbone


class EncoderTop(Backbone):
    """Transformer layers as blocks (so `freeze: N` works), masked mean pooling on top."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.out_dim:
            raise ConfigError(
                f"minilm takes token states [N, tokens, {self.out_dim}] (a text dataset with "
                f"`layer` set), got {list(x.shape)}"
            )
        x = x.float()
        mask = x.abs().amax(-1) > 0  # padding rows are exactly zero
        longest = int(mask.sum(1).max())  # padding sits at the end: drop all-padding columns
        x, mask = x[:, :longest], mask[:, :longest]
        additive = (~mask)[:, None, None, :].to(x.dtype) * torch.finfo(x.dtype).min
        for layer in self.features:
            out = layer(x, attention_mask=additive)
            x = out[0] if isinstance(out, tuple) else out
        m = mask.unsqueeze(-1).to(x.dtype)
        return F.normalize((x * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def minilm(in_features: int = 384, start_layer: int = 4, num_classes: int = 0) -> EncoderTop:
    """Layers `start_layer..5` of the pretrained encoder (needs `metakit[text]`)."""
    from metakit.text.encoder import DIM, load_encoder

    if in_features != DIM:
        raise ConfigError(f"minilm works on {DIM}-d token states, got in_features={in_features}")
    _, model = load_encoder(False)
    layers = model.encoder.layer
    if not 0 <= start_layer < len(layers):
        raise ConfigError(f"minilm start_layer must lie in 0..{len(layers) - 1}, got {start_layer}")
    blocks = [copy.deepcopy(layer).train() for layer in layers[start_layer:]]
    for block in blocks:
        block.requires_grad_(True)
    return EncoderTop(blocks, out_dim=DIM, num_classes=num_classes)
