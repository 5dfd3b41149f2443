"""Learning to optimize: optimizee problem families, meta-training of a learned update rule by
truncated backpropagation through the optimization, and evaluation against tuned baselines."""
