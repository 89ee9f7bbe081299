"""Beam pipelines of the product: `python -m pipelines.market`."""
