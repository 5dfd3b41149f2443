"""Training, evaluation, checkpoints and building runs from configs."""
