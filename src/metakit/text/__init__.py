"""Few-shot text: a frozen pretrained sentence encoder (the `text` extra) and cached embeddings."""
