"""Metric logging: JSON lines always, TensorBoard events beside them."""

from metakit.tracking.logger import RunLogger

__all__ = ["RunLogger"]
