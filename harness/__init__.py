"""Reproduce Kubernetes incidents on local kind clusters and keep them fixed as regression tests."""

__version__ = "0.1.0"
