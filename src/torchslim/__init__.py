"""torchslim: make PyTorch models smaller and faster, and measure it."""

__version__ = "0.1.0"
