"""End to end on real data: ELPV through the offline pretrained EfficientNet-Lite0."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.bases import build_extractor
from pipeline.bases.forward import forward_fn
from pipeline.cache import load_feature_set, verify_feature_set
from pipeline.data.builtin import elpv_root
from pipeline.data.decode import decode_file
from pipeline.data.reader import resize
from pipeline.extract import run_extraction

pytestmark = pytest.mark.slow


def test_elpv_extraction_is_complete_aligned_and_then_a_hit(elpv_cache):
    fs = load_feature_set(elpv_cache)
    assert len(fs) == 2624 and fs.feature_shape == (1280,) and fs.skipped == []
    assert fs.meta["base"] == "efficientnet_lite0" and fs.meta["weights"] == "imagenet"
    assert verify_feature_set(elpv_cache) == []
    counts = {s: int((fs.split == s).sum()) for s in ("train", "validation", "test")}
    assert all(counts[s] / 2624 > 0.1 for s in counts) and counts["train"] > 1700
    # spot-check rows against a fresh forward pass of their own image
    ex = build_extractor("efficientnet_lite0")
    pick = np.random.default_rng(0).choice(len(fs), 16, replace=False)
    images = np.stack([resize(decode_file(str(elpv_root() / fs.ids[i])), 224).numpy()
                       for i in pick])
    np.testing.assert_allclose(fs.features[pick], forward_fn(ex)(images), rtol=1e-3, atol=1e-4)
    again = run_extraction("elpv", ["efficientnet_lite0"], cache_dir=elpv_cache.parent,
                           quiet=True)[0]
    assert again.hit and again.path == elpv_cache
