"""Pretrained convolutional bases: one registry, one module per family."""

from pipeline.bases.extractor import POOLINGS, Extractor, build_base, build_extractor
from pipeline.bases.registry import get_base, list_bases, register
from pipeline.bases.spec import BaseSpec

__all__ = ["POOLINGS", "BaseSpec", "Extractor", "build_base", "build_extractor", "get_base",
           "list_bases", "register"]
