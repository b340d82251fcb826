"""ssl-bench: self-supervised pre-training on medical images with swappable positive pairs."""

__version__ = "0.1.0"
