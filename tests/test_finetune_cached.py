"""Fine-tuning from cached activations of the frozen bottom, exact augmentation, the
selection metric, the schedule options and the LR finder (tiny generated data, weights none).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.finetune import FinetuneOptions, KeepBest, find_learning_rate, finetune
from pipeline.finetune.augment import dihedral_view, parse_augment

SIZE = 32
LAYER = "block_3_expand_relu"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two classes told apart by a diagonal stripe's direction (so flips matter), a cache
    and a logreg head run (no dropout: both paths then draw no random numbers)."""
    from pipeline.extract import run_extraction
    from pipeline.runs import fit_heads

    base = tmp_path_factory.mktemp("ftcached")
    rng = np.random.default_rng(3)
    for label, flip in (("a", False), ("b", True)):
        (base / "data" / label).mkdir(parents=True)
        for i in range(20):
            arr = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
            idx = np.arange(40)
            arr[idx, idx[::-1] if flip else idx] = 230
            Image.fromarray(arr).save(base / "data" / label / f"{i:02d}.png")
    cache = run_extraction(base / "data", ["mobilenet_v2_0.35"], weights="none",
                           input_size=SIZE, layer=LAYER, cache_dir=base / "cache",
                           quiet=True)[0].path
    res = fit_heads([cache], ["logreg"], reports_dir=base / "reports", quiet=True, jobs=1)
    return {"run": res.runs[0].run_dir, "reports": base / "reports", "cache": cache}


def _weights(run_dir: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in keras.models.load_model(run_dir / "model.keras").weights]


def test_cached_and_uncached_paths_train_the_same_model(world, tmp_path):
    common = dict(epochs=2, patience=0, augment="dihedral", unfreeze_from="0.5", seed=5,
                  lr=1e-3, metric="loss", quiet=True)
    off = finetune(world["run"], cached="off", reports_dir=tmp_path / "off", **common)
    on = finetune(world["run"], cached="auto", reports_dir=tmp_path / "on", **common)
    sessions = [json.loads((r.run_dir / "finetune_state.json").read_text())["sessions"]
                for r in (off, on)]
    assert [s[0]["cached_activations"] for s in sessions] == [False, True]
    assert list(world["cache"].parent.glob("*.activations-*.h5"))  # beside the cache
    # Training moved the model (the comparison is not between two untouched models) ...
    assert abs(off.history["val_loss"][-1] - off.initial_validation["log_loss"]) > 1e-6
    # ... and both paths moved it the same way, epoch by epoch, to the same kept weights.
    np.testing.assert_allclose(on.history["loss"], off.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(on.history["val_loss"], off.history["val_loss"], rtol=1e-4)
    assert on.best_epoch == off.best_epoch
    for a, b in zip(_weights(on.run_dir), _weights(off.run_dir), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_damaged_activation_file_is_computed_again(world, tmp_path):
    common = dict(epochs=1, patience=0, augment="flip=horizontal,rotation=0,zoom=0",
                  unfreeze_from="0.5", quiet=True)
    first = finetune(world["run"], reports_dir=tmp_path / "a", **common)
    files = sorted(world["cache"].parent.glob("*.activations-*.h5"),
                   key=lambda p: p.stat().st_mtime)
    with h5py.File(files[-1], "r+") as f:
        ds = f["train/view4/t0"]
        ds[0] = ds[0] + 1.0  # flip some bits: the stored SHA-256 no longer matches
    again = finetune(world["run"], reports_dir=tmp_path / "b", **common)
    np.testing.assert_allclose(again.history["loss"], first.history["loss"], rtol=1e-4)


def test_metric_chooses_the_kept_epoch(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    keep = KeepBest(tmp_path, target=model, metric="balanced_accuracy")
    keep.set_model(model)
    keep.checkpoint(0, 0.70, 0.50)  # the head: epoch 0
    keep.on_epoch_end(0, {"val_loss": 0.40, "val_balanced_accuracy": 0.69})  # lower loss
    assert keep.best_epoch == 0  # but a worse metric: the head stays
    keep.on_epoch_end(1, {"val_loss": 0.60, "val_balanced_accuracy": 0.75})
    assert keep.best_epoch == 2 and keep.best["value"] == 0.75
    keep.on_epoch_end(2, {"val_loss": 0.55, "val_balanced_accuracy": 0.75})  # tie: lower loss
    assert keep.best_epoch == 3
    by_loss = KeepBest(tmp_path / "l", target=model, metric="loss")
    by_loss.set_model(model)
    by_loss.checkpoint(0, 0.50)
    by_loss.on_epoch_end(0, {"val_loss": 0.40, "val_balanced_accuracy": 0.10})
    assert by_loss.best_epoch == 1


def test_finetune_records_the_selection_metric_and_new_history_keys(world, tmp_path):
    res = finetune(world["run"], epochs=1, patience=0, augment="none", unfreeze_from="none",
                   reports_dir=tmp_path, quiet=True)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy",
            "seconds"} <= set(res.history)
    config = json.loads((res.run_dir / "config.json").read_text())
    assert config["selection"]["metric"].startswith(FinetuneOptions.default("metric"))
    ft = config["finetune"]
    assert (ft["schedule"], ft["metric"]) == (FinetuneOptions.default("schedule"),
                                              FinetuneOptions.default("metric"))
    assert (res.run_dir / "learning_curve.png").stat().st_size > 0


def test_dihedral_views_are_the_eight_exact_symmetries():
    x = np.random.default_rng(0).random((2, 5, 5, 3)).astype(np.float32)
    views = [dihedral_view(x, k) for k in range(8)]
    assert len({v.tobytes() for v in views}) == 8
    np.testing.assert_array_equal(views[4], x[:, :, ::-1])  # horizontal flip
    np.testing.assert_array_equal(views[6], x[:, ::-1])  # vertical flip
    np.testing.assert_array_equal(views[2], x[:, ::-1, ::-1])  # half turn
    assert parse_augment("dihedral").views() == tuple(range(8))
    assert parse_augment("flip=horizontal,rot90=true,rotation=0,zoom=0").exact
    assert parse_augment("none").views() == (0,)
    assert not parse_augment("default").exact
    with pytest.raises(PipelineError, match="rot90='maybe': expected true or false"):
        parse_augment("rot90=maybe")


def test_lr_finder_plots_suggests_and_leaves_the_weights(world, tmp_path):
    from pipeline.runs.store import load_head

    before = load_head(world["run"]).config
    found = find_learning_rate(world["run"], reports_dir=world["reports"], augment="none",
                               unfreeze_from="0.5", quiet=True)
    assert found.plot.is_file() and found.plot.parent == Path(world["run"])
    assert 1e-7 < found.suggestion < 1.0 and len(found.rates) == len(found.losses) > 5
    assert load_head(world["run"]).config == before
    res = finetune(world["run"], lr="auto", epochs=1, patience=0, augment="none",
                   unfreeze_from="0.5", reports_dir=tmp_path, quiet=True)
    config = json.loads((res.run_dir / "config.json").read_text())
    assert config["finetune"]["learning_rate"] == "auto"
    assert config["head"]["params"]["learning_rate"] == pytest.approx(
        config["finetune"]["learning_rate_found"])
    assert (res.run_dir / "lr_find.png").is_file()


@pytest.mark.parametrize(("given", "match"), [
    ({"metric": "auc"}, r"metric .* expected one of balanced_accuracy"),
    ({"schedule": "step"}, r"schedule .* expected one of cosine, constant"),
    ({"label_smoothing": 0.9}, r"label_smoothing"),
    ({"weight_decay": -1.0}, r"weight_decay"),
    ({"lr": "fast"}, r"expected a positive number or 'auto'"),
])
def test_new_options_are_checked_before_any_work(given, match):
    with pytest.raises(PipelineError, match=match):
        finetune("best", reports_dir="/nonexistent", quiet=True, **given)
