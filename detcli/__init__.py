"""det: a command-line toolchain for object detection and instance segmentation on PyTorch."""

__version__ = "0.1.0"
