"""pipeline: a feature-extraction cache for transfer learning on images."""

__version__ = "0.1.0"
