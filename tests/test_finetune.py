"""Stage 3: fine-tuning from a head run, predict and export.

A tiny world: two colour classes (separable), a random-init ``mobilenet_v2_0.35`` at 32 px
cut at an early layer (which exercises rebuilding the layer cut, and keeps random-init
activations well scaled: uncut, they shrink to ~1e-11), heads fitted through the heads
stage's Python API; every training run is 1-2 epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.finetune import (
    EpochLog,
    FinetuneOptions,
    KeepBest,
    export,
    finetune,
    fold_head,
    parse_augment,
    predict,
    rebuild_classifier,
    training_model,
)
from pipeline.finetune.data import check_dataset, load_run_cache, load_splits
from pipeline.finetune.model import find_base
from pipeline.finetune.unfreeze import start_index, unfreeze
from pipeline.runs.record import RunMetrics
from pipeline.runs.store import LoadedHead, load_head

SIZE = 32
LAYER = "block_3_expand_relu"


def _colour_images(root: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(7)
    for name, colour in (("blue", (40, 60, 200)), ("red", (210, 50, 40))):
        for i in range(n):
            h, w = (int(v) for v in rng.integers(36, 64, 2))
            arr = np.clip(rng.normal(colour, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Images, a cache and fitted logreg / linear_svm / dense head runs."""
    from pipeline.extract import run_extraction
    from pipeline.runs import fit_heads

    base = tmp_path_factory.mktemp("finetune")
    data = _colour_images(base / "data")
    reports = base / "reports"
    cache = run_extraction(data, ["mobilenet_v2_0.35"], weights="none", input_size=SIZE,
                           layer=LAYER, cache_dir=base / "cache", quiet=True)[0].path
    result = fit_heads([cache], ["logreg", "linear_svm", {"kind": "dense", "epochs": 5}],
                       reports_dir=reports, quiet=True, jobs=1)
    runs = {r.config.kind: r.run_dir for r in result.runs}
    return {"data": data, "reports": reports, "cache": cache, "runs": runs, "base": base}


def _val(run_dir: Path):
    loaded = load_head(run_dir)
    fs = load_run_cache(loaded.config["cache"])
    return loaded, fs, load_splits(fs, SIZE)["validation"]


@pytest.mark.parametrize("kind", ["logreg", "linear_svm", "dense"])
def test_rebuilt_model_equals_head_predict_proba_before_training(world, kind):
    loaded, fs, val = _val(world["runs"][kind])
    rebuilt = rebuild_classifier(loaded.config["cache"], loaded)
    want = loaded.predict_proba(fs.features[fs.mask("validation")])
    got = rebuilt.classifier.predict(val.x, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The training model (augmentation in front) is the same function outside training.
    model = training_model(rebuilt.classifier, parse_augment("default"))
    np.testing.assert_allclose(model.predict(val.x, verbose=0), want, atol=1e-5)


@pytest.mark.parametrize("kind", ["logreg", "linear_svm", "mlp"])
def test_fold_is_exact_for_several_classes(kind):
    from pipeline.heads import make_head

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 12))
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + rng.normal(0, 2, (len(y), 12))) * 5 + 7  # unscaled on purpose
    head = make_head(kind, {"max_iter": 300} if kind == "mlp" else None, n_classes=3).fit(x, y)
    loaded = LoadedHead(run_dir=Path("."), head=head, class_names=["a", "b", "c"],
                        config={"cache": {"feature_shape": [12]}})
    folded = fold_head(loaded, 12)
    inp = keras.Input((12,))
    model = keras.Model(inp, keras.layers.Softmax()(folded(inp)))
    np.testing.assert_allclose(model.predict(x.astype(np.float32), verbose=0),
                               head.predict_proba(x), atol=1e-5)


def test_heads_that_cannot_be_trained_through_are_refused_for_finetuning(world):
    from pipeline.heads import make_head

    loaded, fs, _ = _val(world["runs"]["logreg"])
    x, y = fs.xy("train")
    knn = make_head("knn", {"n_neighbors": 3}, n_classes=2).fit(x, y)
    fake = LoadedHead(run_dir=Path("."), head=knn, class_names=loaded.class_names,
                      config=loaded.config)
    with pytest.raises(PipelineError, match="cannot be fine-tuned") as e:
        fold_head(fake, x.shape[1])
    assert "export" not in str(e.value)  # the error names the request, fine-tuning


def test_unfreeze_sets_trainable_and_keeps_batchnorm_in_inference_mode(world):
    loaded, _, val = _val(world["runs"]["logreg"])
    rebuilt = rebuild_classifier(loaded.config["cache"], loaded)
    base = find_base(rebuilt.classifier)
    n = len(base.layers)
    bn = keras.layers.BatchNormalization

    done = unfreeze(base, "0.3")
    assert done.start == n - int(np.ceil(0.3 * n))
    for i, layer in enumerate(base.layers):
        assert layer.trainable == (i >= done.start and not isinstance(layer, bn)), layer.name
    name = base.layers[-10].name
    assert unfreeze(base, name).start == n - 10 == start_index(base, "-10")
    assert unfreeze(base, "all").start == 0
    assert all(lyr.trainable for lyr in base.layers if not isinstance(lyr, bn))
    assert unfreeze(base, "none").start is None and not base.trainable_weights
    assert rebuilt.classifier.get_layer("features").get_layer("preprocess").trainable is False

    # Train the whole base one epoch: BN statistics must not move, and the base must compute
    # the same with training=True as in inference.
    unfreeze(base, "all")
    bns = [lyr for lyr in base.layers if isinstance(lyr, bn)]
    assert bns and not any(lyr.trainable for lyr in bns)
    before = [np.array(lyr.moving_mean) for lyr in bns]
    assert base.layers[-3].weights  # block_3_expand: a convolution just below the cut
    kernel_before = np.array(base.layers[-3].weights[0])
    model = training_model(rebuilt.classifier, parse_augment("none"))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy())
    model.fit(val.x, val.y, epochs=1, batch_size=8, verbose=0)
    after = [np.array(lyr.moving_mean) for lyr in bns]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    trained = [lyr for lyr in base.layers if lyr.trainable_weights]
    assert trained  # the convolutions did train ...
    assert not np.array_equal(kernel_before, np.array(base.layers[-3].weights[0]))
    feats = rebuilt.classifier.get_layer("features")
    np.testing.assert_allclose(feats(val.x[:4], training=True), feats(val.x[:4], training=False),
                               atol=1e-5)


def _base(world):
    loaded, _, _ = _val(world["runs"]["logreg"])
    return find_base(rebuild_classifier(loaded.config["cache"], loaded).classifier)


def test_unfreeze_index_zero_is_the_whole_base(world):
    assert start_index(_base(world), "0") == 0


@pytest.mark.parametrize("spec", ["no_such_layer", "1.5", "-0.2", "100000"])
def test_bad_unfreeze_spec_is_one_line_error(world, spec):
    base = _base(world)
    with pytest.raises(PipelineError, match="--unfreeze-from") as e:
        start_index(base, spec)
    assert "\n" not in str(e.value)


def test_finetune_writes_a_run_that_joins_the_leaderboard(world):
    from pipeline.runs.leaderboard import leaderboard

    reports = world["reports"]
    res = finetune(world["runs"]["dense"], epochs=2, patience=0, reports_dir=reports,
                   quiet=True, unfreeze_from="0.2")
    assert res.initial_max_abs_diff < 1e-5
    assert res.epochs_run == 2 and len(res.history["val_loss"]) == 2
    for name in ("model.keras", "config.json", "metrics.json", "learning_curve.png",
                 "confusion_matrix.png"):
        assert (res.run_dir / name).is_file(), name
    assert not (res.run_dir / "backup").exists()
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss",
                "confusion_matrix"} <= set(metrics[split])
    assert metrics["head_history"]["loss"]  # the dense head's phase, joined in the plot
    config = json.loads((res.run_dir / "config.json").read_text())
    assert config["stage"] == "finetune" and config["finetune"]["source_run"] == \
        world["runs"]["dense"].name
    rows = {r["run_id"]: r for r in leaderboard(reports)}
    assert rows[res.run_id]["head"] == "dense+finetune"
    assert rows[res.run_id]["test_accuracy"] == pytest.approx(res.test["accuracy"])
    # A fine-tuned run is not fine-tuned again (its head run is).
    with pytest.raises(PipelineError, match="already fine-tuned"):
        finetune(res.run_dir, reports_dir=reports, quiet=True)


_CHILD = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from pipeline.finetune import finetune
finetune(sys.argv[1], epochs=40, patience=0, augment="none", reports_dir=sys.argv[2],
         quiet=True, seed=3)
"""


def test_killed_run_resumes_from_its_last_finished_epoch(world, tmp_path):
    reports = tmp_path / "reports"
    run = world["runs"]["logreg"]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(run), str(reports)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    meta = None
    try:
        while time.monotonic() < deadline and child.poll() is None:
            found = list(reports.glob("*/backup/training_metadata.json"))
            if found:
                try:
                    if json.loads(found[0].read_text()).get("epoch", 0) >= 1:
                        meta = found[0]
                        break
                except ValueError:
                    pass  # being written
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
    assert meta is not None, f"no epoch backup appeared; child said: {err.decode()[-2000:]}"
    run_dir = meta.parents[1]
    assert not (run_dir / "metrics.json").exists()  # killed mid-way: not a finished run
    done = json.loads(meta.read_text())["epoch"]
    assert done >= 1
    # Same settings (epochs is a budget, not part of the identity): resumes that folder.
    res = finetune(run, epochs=done + 1, patience=0, augment="none", reports_dir=reports,
                   quiet=True, seed=3)
    assert res.run_dir == run_dir
    assert res.resumed_from_epoch == done
    assert res.epochs_run == done + 1 == len(res.history["loss"])
    state = json.loads((run_dir / "finetune_state.json").read_text())
    assert [s["start_epoch"] for s in state["sessions"]] == [0, done]
    assert state["status"] == "done"
    # Different settings start a new folder.
    other = finetune(run, epochs=1, patience=0, augment="none", reports_dir=reports,
                     quiet=True, seed=4)
    assert other.run_dir != run_dir and other.resumed_from_epoch == 0


def test_predict_and_export_round_trip(world, tmp_path):
    reports = world["reports"]
    res = finetune(world["runs"]["logreg"], epochs=1, reports_dir=reports, quiet=True)
    images = [world["data"] / "red" / "000.png", world["data"] / "blue" / "001.png"]
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(((20, 90), (120, 33), (64, 64))):
        p = tmp_path / f"odd{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        images.append(p)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    preds = predict(res.run_id, [*images, bad], reports_dir=reports)
    assert [p.error is None for p in preds] == [True] * len(images) + [False]
    assert preds[-1].label is None and preds[-1].probability is None
    assert preds[0].label == "red" and preds[1].label == "blue"

    out = export(res.run_id, tmp_path / "exported.keras", reports_dir=reports)
    model = keras.models.load_model(out.path)  # plain: no custom objects, no pipeline code
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape[1:]) == \
        (None, None, 3)
    from pipeline.data.decode import decode_file

    for path, p in zip(images, preds, strict=False):
        got = np.asarray(model(decode_file(str(path))[None]))[0]
        want = [p.probabilities[c] for c in out.metadata["class_names"]]
        np.testing.assert_allclose(got, want, atol=1e-5)
        # Whatever a caller passes, BatchNormalization stays in inference mode.
        np.testing.assert_allclose(np.asarray(model(decode_file(str(path))[None],
                                                    training=True))[0], want, atol=1e-5)
    # predict with the exported file gives the same answers (and the class names).
    again = predict(out.path, images)
    for a, b in zip(again, preds, strict=False):
        assert a.label == b.label and a.probability == pytest.approx(b.probability, abs=1e-5)

    # A head run predicts and exports too (base + head rebuilt from its record).
    head_preds = predict(world["runs"]["linear_svm"], images[:2], reports_dir=reports)
    assert [p.label for p in head_preds] == ["red", "blue"]
    head_model = export(world["runs"]["linear_svm"], tmp_path / "head.keras",
                        reports_dir=reports)
    got = np.asarray(keras.models.load_model(head_model.path)(
        decode_file(str(images[0]))[None]))[0]
    np.testing.assert_allclose(got, list(head_preds[0].probabilities.values()), atol=1e-5)


def test_cli_predict_json_and_csv(world):
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    img = str(world["data"] / "red" / "002.png")
    run = str(world["runs"]["linear_svm"])
    r = runner.invoke(app, ["predict", run, img, "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["label"] == "red" and set(rows[0]["probabilities"]) == {"blue", "red"}
    r = runner.invoke(app, ["predict", run, img, "--csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == \
        "path,label,probability,blue,red,error"


def test_bad_input_is_a_one_line_error(world, tmp_path):
    reports = world["reports"]
    cases = [
        (lambda: finetune("no-such-run", reports_dir=reports, quiet=True), "no run"),
        (lambda: finetune("best", reports_dir=tmp_path / "empty", quiet=True), "no head runs"),
        (lambda: finetune(world["runs"]["logreg"], reports_dir=reports, quiet=True,
                          unfreeze_from="block_99_nope"), "no such layer"),
        (lambda: finetune(world["runs"]["logreg"], optimizer="adagrad", quiet=True),
         "--optimizer"),
        (lambda: finetune(world["runs"]["logreg"], augment="spin=3", quiet=True),
         "unknown augmentation"),
        (lambda: predict(world["runs"]["logreg"], [tmp_path / "missing.png"]),
         "no such file"),
        (lambda: export(world["runs"]["logreg"], tmp_path / "x.h5"), "must end in .keras"),
    ]
    for call, match in cases:
        with pytest.raises(PipelineError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_changed_dataset_is_detected(world):
    loaded = load_head(world["runs"]["logreg"])
    fs = load_run_cache(loaded.config["cache"])
    check_dataset(fs)  # unchanged: passes
    fs.sha256 = fs.sha256.copy()
    fs.sha256[0] = "0" * 64
    fs.ids = fs.ids.copy()
    fs.ids[1] = "red/gone.png"
    with pytest.raises(PipelineError, match="dataset changed since extraction: 2 of") as e:
        check_dataset(fs)
    assert "(changed)" in str(e.value) and "red/gone.png (missing)" in str(e.value)


def test_cli_errors_are_one_line(world, tmp_path):
    env = dict(os.environ, PIPELINE_REPORTS_DIR=str(world["reports"]))
    r = subprocess.run([sys.executable, "-m", "pipeline", "finetune", "nope-run"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1  # a failure while running (2 is for usage errors)
    assert r.stderr.strip().startswith("error: no run 'nope-run'")
    assert len(r.stderr.strip().splitlines()) == 1


def test_experiment_finetune_table_supplies_defaults():
    table = {"lr": 3e-4, "unfreeze_from": 0.5, "augment": {"flip": "vertical"}}
    out = FinetuneOptions.resolve({"epochs": 4, "learning_rate": None}, table)
    assert out.learning_rate == 3e-4 and out.unfreeze_from == 0.5
    assert out.epochs == 4 and out.patience == FinetuneOptions.default("patience") == 3
    assert parse_augment(out.augment).flip == "vertical" == out.augmentation.flip
    assert FinetuneOptions.resolve({"learning_rate": 1e-3}, table).learning_rate == 1e-3
    with pytest.raises(PipelineError, match="unknown key"):
        FinetuneOptions.resolve({}, {"epoch": 3})


def test_finetune_options_precedence_given_over_table_over_default():
    table = {"epochs": 7, "optimizer": "sgd", "seed": 5}
    out = FinetuneOptions.resolve({"epochs": 2, "seed": None, "lr": 1e-4}, table,
                                  "run r: experiment [finetune]")
    assert out.epochs == 2  # given
    assert out.optimizer == "sgd" and out.seed == 5  # table (None is "not given")
    assert out.learning_rate == 1e-4  # given through the `lr` alias
    assert out.batch_size == 32 and out.unfreeze_from == "0.3"  # defaults
    assert out.class_weight is None  # resolved later: the head's own setting
    assert FinetuneOptions.resolve() == FinetuneOptions()
    assert FinetuneOptions.from_mapping({"lr": 2e-5}).learning_rate == 2e-5
    assert FinetuneOptions().with_given({"lr": 3e-5}).learning_rate == 3e-5


@pytest.mark.parametrize(("table", "match"), [
    ({"seed": "x"}, r"seed \(--seed\) = 'x': expected a whole number"),
    ({"epochs": 2.5}, r"epochs .* expected a whole number"),
    ({"epochs": 0}, r"epochs .* expected a value at least 1"),
    ({"patience": True}, r"patience .* expected a whole number"),
    ({"learning_rate": "fast"}, r"learning_rate .* expected a positive number or 'auto'"),
    ({"lr": -1e-5}, r"learning_rate .* expected a positive number or 'auto'"),
    ({"optimizer": "adamw"}, r"optimizer \(--optimizer\) = 'adamw': expected one of adam, "
                             r"rmsprop, sgd"),
    ({"class_weight": "inverse"}, r"class_weight .* expected one of none, balanced"),
    ({"unfreeze_from": 1.5}, r"unfreeze_from .* a fraction must be in \(0, 1\]"),
    ({"unfreeze_from": True}, r"unfreeze_from .* expected a string"),
    ({"augment": "spin=3"}, r"augment .* unknown augmentation option"),
    ({"augment": {"zoom": 2}}, r"augment .* zoom=2: expected a number from 0 to 1"),
    ({"augment": 3}, r"augment .* expected"),
])
def test_finetune_options_from_a_toml_table_are_checked(table, match):
    where = "run r: experiment [finetune]"
    with pytest.raises(PipelineError, match=match) as e:
        FinetuneOptions.from_mapping(table, where)
    assert str(e.value).startswith(where) and "\n" not in str(e.value)


def test_finetune_options_unknown_key_names_the_expected_ones():
    with pytest.raises(PipelineError) as e:
        FinetuneOptions.from_mapping({"epoch": 3}, "exp.toml [finetune]")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("exp.toml [finetune]: unknown key(s) epoch")
    assert "expected epochs, learning_rate, optimizer, metric, schedule, warmup, " \
        "weight_decay, label_smoothing, cached, unfreeze_from, augment, batch_size, " \
        "patience, class_weight, seed" in msg
    with pytest.raises(PipelineError, match="expected a table"):
        FinetuneOptions.from_mapping(["epochs"], "exp.toml [finetune]")
    with pytest.raises(PipelineError, match="unknown fine-tuning option.*epoch; expected "
                       "epochs, learning_rate") as e:
        finetune("best", epoch=3)
    assert "\n" not in str(e.value)


def test_cli_takes_help_and_defaults_from_the_options_schema():
    from typer.testing import CliRunner

    from pipeline.cli import app

    r = CliRunner().invoke(app, ["finetune", "--help"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for name in ("epochs", "patience", "batch_size"):
        assert " ".join(FinetuneOptions.help(name).split()) in text, name
    assert "--lr" in text and "[default: (0.001)]" in text and "[default: (0.3)]" in text


def test_training_helpers_shared_with_the_heads_stage():
    from pipeline.finetune import OPTIMIZERS
    from pipeline.heads.training import OPTIMIZERS as TABLE
    from pipeline.heads.training import balanced_class_weight, make_optimizer

    assert set(OPTIMIZERS) < set(TABLE) and "adamw" in TABLE
    for name in TABLE:
        opt = make_optimizer(name, 1e-3)
        assert isinstance(opt, keras.optimizers.Optimizer)
        assert float(opt.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(PipelineError, match="optimizer 'adagrad': expected one of"):
        make_optimizer("adagrad", 1e-3)
    y = np.array([0, 0, 0, 2])  # class 1 absent: no entry
    weights = balanced_class_weight(y, 3)
    assert weights == {0: pytest.approx(4 / 6), 2: pytest.approx(2.0)}
    assert all(type(k) is int for k in weights)


def _tiny_model() -> keras.Model:
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy())
    return model


def test_keep_best_keeps_the_best_epoch_and_its_patience_across_restarts(tmp_path):
    model = _tiny_model()
    keep = KeepBest(tmp_path, patience=2)
    keep.set_model(model)
    assert keep.best == {} and keep.best_epoch is None and not keep.restore()
    keep.checkpoint(0, 0.9)  # the starting point competes too
    best_weights = [np.array(w) for w in model.get_weights()]
    keep.on_epoch_end(0, {"val_loss": 1.0})  # epoch 1: worse, nothing saved
    assert keep.best == {"epoch": 0, "metric": "log_loss", "value": 0.9, "val_loss": 0.9} \
        and not model.stop_training
    assert json.loads((tmp_path / KeepBest.STATE_FILE).read_text()) == keep.best

    # A restart: a new callback on the same folder carries on (Keras' would start afresh).
    again = KeepBest(tmp_path, patience=2)
    again.set_model(model)
    assert again.best_epoch == 0
    model.set_weights([w + 1 for w in best_weights])
    again.on_epoch_end(1, {"val_loss": float("nan")})  # epoch 2: not finite, not better
    assert model.stop_training  # 2 epochs without a better val_loss since epoch 0
    assert again.restore()
    for got, want in zip(model.get_weights(), best_weights, strict=True):
        np.testing.assert_array_equal(got, want)

    model.stop_training = False
    again.on_epoch_end(2, {"val_loss": 0.5})  # epoch 3: better, saved
    assert again.best == {"epoch": 3, "metric": "log_loss", "value": 0.5, "val_loss": 0.5} \
        and not model.stop_training
    assert KeepBest(tmp_path).best_epoch == 3
    assert [p.name for p in tmp_path.iterdir() if "weights" in p.name] == [
        KeepBest.WEIGHTS_FILE]  # replaced atomically: no temporary file left
    again.discard_weights()
    assert not again.weights_path.exists() and again.state_path.exists()


def test_keep_best_with_a_target_inside_a_fitted_model(tmp_path):
    inner = _tiny_model()
    outer = keras.Model(inner.inputs, inner.outputs)
    outer.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype("float32"), rng.integers(0, 2, 32)
    keep = KeepBest(tmp_path, patience=0, target=inner)
    log = EpochLog(tmp_path / "history.json")
    outer.fit(x, y, validation_data=(x, y), epochs=3, verbose=0, callbacks=[log, keep])
    history = json.loads((tmp_path / "history.json").read_text())
    assert history == log.history and len(history["val_loss"]) == 3 == len(history["seconds"])
    assert keep.best["val_loss"] == pytest.approx(min(history["val_loss"]))
    assert keep.best_epoch == int(np.argmin(history["val_loss"])) + 1


def test_epoch_log_continues_a_file_and_replaces_redone_epochs(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"loss": [0.9, 0.8, 0.7], "seconds": [1.0, 1.0, 1.0]}))
    log = EpochLog(path, epochs_done=2)  # the backup restores epoch 2; epoch 3 is redone
    assert log.history == {"loss": [0.9, 0.8], "seconds": [1.0, 1.0]}
    log.on_epoch_begin(2)
    log.on_epoch_end(2, {"loss": 0.6, "val_loss": 0.65})
    saved = json.loads(path.read_text())
    assert saved["loss"] == [0.9, 0.8, 0.6] and saved["val_loss"] == [0.65]
    assert len(saved["seconds"]) == 3 and saved["seconds"][-1] >= 0
    assert EpochLog(path).history == saved
    assert EpochLog(tmp_path / "none.json").history == {}


def test_finetune_takes_options_from_the_head_runs_experiment_table(world, tmp_path):
    import shutil

    reports = tmp_path / "reports"
    run = reports / world["runs"]["logreg"].name
    shutil.copytree(world["runs"]["logreg"], run)
    config = json.loads((run / "config.json").read_text())
    table = {"epochs": 1, "augment": "none", "unfreeze_from": "none", "optimizer": "sgd",
             "seed": 9, "patience": 0}
    (run / "config.json").write_text(json.dumps({**config, "experiment": {"finetune": table}}))

    res = finetune(run, seed=11, lr=2e-5, reports_dir=reports, quiet=True)
    ft = json.loads((res.run_dir / "config.json").read_text())["finetune"]
    assert ft["optimizer"] == "sgd" and ft["unfreeze_from"] == "None"  # from the table
    assert ft["seed"] == 11 and ft["learning_rate"] == 2e-5  # given: wins over the table
    assert ft["batch_size"] == 32 and ft["epochs_budget"] == 1 == res.epochs_run
    assert ft["class_weight"] == "none"  # not given anywhere: the head's own setting

    # An options object is taken whole (the table is not consulted); keywords still win.
    res = finetune(run, FinetuneOptions(epochs=1, augment="none", unfreeze_from="none"),
                   patience=0, ctx=Context.create(reports_dir=reports, quiet=True))
    ft = json.loads((res.run_dir / "config.json").read_text())["finetune"]
    assert ft["optimizer"] == "adam" and ft["seed"] == 0 and ft["patience"] == 0

    bad = {**config, "experiment": {"finetune": {**table, "epochs": "many"}}}
    (run / "config.json").write_text(json.dumps(bad))
    with pytest.raises(PipelineError, match=r"experiment \[finetune\]: epochs "
                       r"\(--epochs\) = 'many': expected a whole number") as e:
        finetune(run, reports_dir=reports, quiet=True)
    assert "\n" not in str(e.value)
    with pytest.raises(PipelineError, match="--optimizer"):  # given values: before any work
        finetune(tmp_path / "no-such-run", FinetuneOptions(epochs=1), optimizer="adagrad")


def test_moved_reports_and_cache_predict_and_finetune(world, tmp_path):
    """Reports and cache copied to new paths, the originals deleted (the images stay)."""
    import csv
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.runs import RunRecord, fit_heads

    old = tmp_path / "old"
    shutil.copytree(world["cache"].parent, old / "cache")
    result = fit_heads([old / "cache" / world["cache"].name], ["logreg"],
                       reports_dir=old / "reports", quiet=True, jobs=1)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    shutil.rmtree(old)
    reports, cache_dir = new / "reports", new / "cache"
    images = [world["data"] / "red" / "000.png", world["data"] / "blue" / "001.png"]
    assert [p.label for p in predict("#1", images, reports_dir=reports)] == ["red", "blue"]
    out = CliRunner().invoke(app, ["finetune", "#1", "--epochs", "1", "--reports-dir",
                                   str(reports), "--cache-dir", str(cache_dir)])
    assert out.exit_code == 0, out.output
    assert f"#1 -> {result.runs[0].run_id}" in out.output  # the resolved run is echoed
    (tuned,) = [d for d in reports.iterdir() if (d / "config.json").is_file()
                and d.name != result.runs[0].run_id]
    record = RunRecord.read(tuned)
    assert record.is_finetuned and record.cache.path == str((cache_dir /
                                                             world["cache"].name).resolve())
    with open(tuned / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    fs = load_run_cache(record.cache)
    assert sorted((r["split"], r["id"]) for r in rows) == sorted(
        (s, str(i)) for s in ("validation", "test") for i in fs.ids[fs.mask(s)])
    accuracy = np.mean([r["predicted"] == r["label"] for r in rows if r["split"] == "test"])
    assert accuracy == pytest.approx(RunMetrics.read(tuned).test["accuracy"])
    # Without the folder (and no $PIPELINE_CACHE_DIR there) the cache is not found: one line.
    out = CliRunner().invoke(app, ["finetune", "#1", "--epochs", "1", "--fresh",
                                   "--reports-dir", str(reports), "--cache-dir",
                                   str(tmp_path / "nowhere")])
    assert out.exit_code != 0 and "pass --cache-dir" in str(out.exception or out.output)
