"""Training the dense heads on in-memory feature rows, without a framework in the loop.

The Keras heads are ``[Dense(units, relu) -> Dropout] -> Dense(n_classes)`` (or ``Dropout ->
Dense`` for ``dense``) on a few thousand rows of a few hundred to a few thousand features:
each step is a couple of small matrix products, and ``model.fit`` spent almost all of its time
in per-step and per-epoch framework overhead (callbacks, metrics, tracing, ~0.5 s per epoch on
2 cores). Here the same training is a plain NumPy loop over the rows in memory:

* the same initialisation (Glorot-uniform kernels, zero biases), the same inverted dropout
  (rate ``dropout``, kept activations scaled by ``1 / (1 - rate)``), the same loss (softmax
  cross-entropy on logits, averaged over the batch, rows weighted by ``class_weight``), the
  same optimizers with Keras' formulas and defaults (:data:`OPTIMIZERS`), the rows shuffled
  every epoch, the last partial batch kept;
* the same early stopping as ``keras.callbacks.EarlyStopping(monitor="val_loss", patience,
  restore_best_weights=True)``: stop once the validation loss has not improved for
  ``patience`` epochs, and keep the weights of the best epoch;
* the same per-epoch ``history`` keys (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).

Random numbers come from one ``numpy.random.Generator`` seeded with the head's seed, so a
configuration trains identically twice on any machine. The numbers are not bit-identical to
``model.fit`` (a different random stream and summation order), the same within seed-to-seed
noise; the caller builds the Keras model from :attr:`DenseWeights.arrays` only when it
saves or exports the head. No TensorFlow is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.heads.threads import limited_threads

#: Rows gathered (shuffled, dropout applied) at once: a multiple of the batch near this.
_CHUNK_ROWS = 4096
#: Dropout draws 16-bit uniform integers: the rate is honoured to within 2**-16.
_DROP_LEVELS = 1 << 16


@dataclass
class DenseWeights:
    """The trainable arrays: ``hidden`` (kernel, bias) or ``None``, and the logits layer."""

    kernel: np.ndarray
    bias: np.ndarray
    hidden_kernel: np.ndarray | None = None
    hidden_bias: np.ndarray | None = None

    @property
    def arrays(self) -> list[np.ndarray]:
        """In the order of ``keras.Model.get_weights`` (hidden layer first)."""
        if self.hidden_kernel is None or self.hidden_bias is None:
            return [self.kernel, self.bias]
        return [self.hidden_kernel, self.hidden_bias, self.kernel, self.bias]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference (no dropout): float32 logits of ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if self.hidden_kernel is not None:
            x = np.maximum(x @ self.hidden_kernel + self.hidden_bias, 0.0)
        return x @ self.kernel + self.bias


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Keras' default kernel initialiser: ``U(-l, l)``, ``l = sqrt(6 / (fan_in + fan_out))``."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


class _Optimizer:
    """Keras' update rules (``keras.optimizers`` defaults), in place on float32 arrays, with
    one scratch buffer per array (no temporaries: the step is memory-bound)."""

    def __init__(self, name: str, learning_rate: float, params: list[np.ndarray]):
        if name not in OPTIMIZERS:
            raise PipelineError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")
        self.name, self.lr, self.t = name, float(learning_rate), 0
        self.m = [np.zeros_like(p) for p in params] if name in ("adam", "adamw") else []
        self.v = [np.zeros_like(p) for p in params] if name != "sgd" else []
        self.tmp = [np.empty_like(p) for p in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.t += 1
        lr = np.float32(self.lr)
        if self.name == "sgd":
            for p, g, tmp in zip(params, grads, self.tmp, strict=True):
                p -= np.multiply(g, lr, out=tmp)
            return
        if self.name == "rmsprop":  # rho 0.9, epsilon 1e-7, no momentum, not centred
            for p, g, v, tmp in zip(params, grads, self.v, self.tmp, strict=True):
                v *= np.float32(0.9)
                v += np.multiply(np.square(g, out=tmp), np.float32(0.1), out=tmp)
                np.sqrt(np.add(v, np.float32(1e-7), out=tmp), out=tmp)
                p -= np.multiply(np.divide(g, tmp, out=tmp), lr, out=tmp)
            return
        if self.name == "adamw":  # weight decay 0.004, applied before the Adam step
            for p in params:
                p *= np.float32(1.0 - 0.004 * self.lr)
        # Adam: beta_1 0.9, beta_2 0.999, epsilon 1e-7 (Keras' "epsilon hat" form)
        alpha = np.float32(self.lr * np.sqrt(1 - 0.999**self.t) / (1 - 0.9**self.t))
        for p, g, m, v, tmp in zip(params, grads, self.m, self.v, self.tmp, strict=True):
            m *= np.float32(0.9)
            m += np.multiply(g, np.float32(0.1), out=tmp)
            v *= np.float32(0.999)
            v += np.multiply(np.square(g, out=tmp), np.float32(0.001), out=tmp)
            np.add(np.sqrt(v, out=tmp), np.float32(1e-7), out=tmp)
            p -= np.multiply(np.divide(m, tmp, out=tmp), alpha, out=tmp)


#: The optimizers (heads' names); each follows the ``keras.optimizers`` class of that name.
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


def _keep(rng: np.random.Generator, shape: tuple[int, ...], rate: float) -> np.ndarray | None:
    """A boolean dropout mask, each entry kept with probability ``1 - rate`` (to within
    2**-16), from the generator's raw 64-bit output (the cheapest bits it makes); ``None``
    when ``rate`` is 0."""
    if rate <= 0:
        return None
    n = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((n + 3) // 4)
    draws = np.asarray(raw, dtype=np.uint64).view(np.uint16)[:n].reshape(shape)
    return draws >= np.uint16(round(rate * _DROP_LEVELS))


class DenseTrainer:
    """One training run of a dense head (:func:`train_dense` is the entry point).

    The first layer's bias rides in its kernel's last row against a constant-1 input column
    (appended once to the rows), which halves the per-step calls of the optimizer: at these
    sizes a step costs its number of NumPy calls, not its arithmetic.
    """

    def __init__(self, params: Mapping[str, Any], *, n_classes: int, n_features: int,
                 seed: int):
        self.rng = np.random.default_rng(seed)
        self.dropout = float(params["dropout"])
        self.batch_size = int(params["batch_size"])
        self.units = params.get("units")
        self.scale = np.float32(1.0 / (1.0 - self.dropout))
        self.d = n_features
        width = self.units or n_classes
        w1 = np.zeros((n_features + 1, width), np.float32)
        w1[:n_features] = glorot_uniform(self.rng, n_features, width)
        self.params = [w1]
        if self.units:
            self.params += [glorot_uniform(self.rng, self.units, n_classes),
                            np.zeros(n_classes, np.float32)]
        self.opt = _Optimizer(params["optimizer"], params["learning_rate"], self.params)

    def weights(self) -> DenseWeights:
        """The trained arrays, split back into Keras' kernel and bias (copies)."""
        w1 = self.params[0]
        kernel, bias = w1[:self.d].copy(), w1[self.d].copy()
        if not self.units:
            return DenseWeights(kernel, bias)
        return DenseWeights(self.params[1].copy(), self.params[2].copy(), kernel, bias)

    def logits(self, xa: np.ndarray) -> np.ndarray:
        """Inference logits of augmented rows (no dropout)."""
        z = xa @ self.params[0]
        if self.units:
            z = np.maximum(z, 0.0, out=z) @ self.params[1] + self.params[2]
        return z

    def step(self, xb: np.ndarray, yb: np.ndarray, sw: np.ndarray | None,
             out: np.ndarray) -> None:
        """One minibatch: forward with dropout, the loss's gradient, the optimizer's update.
        ``out`` receives each row's (weighted) loss and (weighted) correctness."""
        w = self.params
        h = mask = None
        if self.units:
            h = np.maximum(xb @ w[0], 0.0)
            mask = _keep(self.rng, h.shape, self.dropout)
            top = h if mask is None else np.multiply(h, mask) * self.scale
            z = top @ w[1] + w[2]
        else:  # the input dropout was applied to the whole chunk
            top = xb
            z = xb @ w[0]
        rows = np.arange(len(yb))
        z -= z.max(axis=1, keepdims=True)
        g = np.exp(z)
        total = g.sum(axis=1, keepdims=True)
        out[0] = np.log(total[:, 0]) - z[rows, yb]
        out[1] = z.argmax(axis=1) == yb
        g /= total
        g[rows, yb] -= 1.0
        if sw is not None:
            out *= sw
            g *= (sw * np.float32(1.0 / len(yb)))[:, None]
        else:  # the batch mean, as Keras' "sum_over_batch_size"
            g *= np.float32(1.0 / len(yb))
        if h is None:
            self.opt.step(w, [top.T @ g])
            return
        dh = g @ w[1].T
        if mask is not None:
            dh *= mask
            dh *= self.scale
        dh *= h > 0
        self.opt.step(w, [xb.T @ dh, top.T @ g, g.sum(axis=0)])

    def epoch(self, xa: np.ndarray, y: np.ndarray, sw: np.ndarray | None
              ) -> tuple[float, float]:
        """One pass over the shuffled rows: ``(mean loss, accuracy)`` as Keras logs them."""
        stats = np.zeros((2, len(y)), np.float32)
        order = self.rng.permutation(len(y))
        bs = self.batch_size
        chunk = bs * max(1, _CHUNK_ROWS // bs)
        for start in range(0, len(y), chunk):
            idx = order[start:start + chunk]
            xc = xa[idx]
            if not self.units:  # rows come pre-scaled by 1 / (1 - rate) (see train)
                mask = _keep(self.rng, (len(idx), self.d), self.dropout)
                if mask is not None:
                    np.multiply(xc[:, :self.d], mask, out=xc[:, :self.d])
            yc, swc = y[idx], None if sw is None else sw[idx]
            for b in range(0, len(idx), bs):
                self.step(xc[b:b + bs], yc[b:b + bs], None if swc is None else swc[b:b + bs],
                          stats[:, start + b:start + b + bs])
        weight = len(y) if sw is None else float(sw.sum())
        return float(stats[0].sum() / len(y)), float(stats[1].sum() / weight)

    def validation(self, xa: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        z = self.logits(xa)
        z -= z.max(axis=1, keepdims=True)
        loss = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
        return float(loss.mean()), float(np.mean(z.argmax(axis=1) == y))


def _augment(x: np.ndarray) -> np.ndarray:
    """Float32 rows with a constant-1 column appended (the first layer's bias input)."""
    x = np.asarray(x)
    out = np.empty((x.shape[0], x.shape[1] + 1), np.float32)
    out[:, :-1] = x
    out[:, -1] = 1.0
    return out


def train_dense(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None,
                y_val: np.ndarray | None, params: Mapping[str, Any], *, n_classes: int,
                seed: int, class_weight: Mapping[int, float] | None = None
                ) -> tuple[DenseWeights, dict[str, list[float]], int]:
    """Train a dense head; returns ``(weights, history, best_epoch)`` (epochs from 1).

    ``params``: the head's ``units`` (absent or ``None``: no hidden layer), ``dropout``,
    ``optimizer``, ``learning_rate``, ``batch_size``, ``epochs``, ``patience``. With
    validation rows and ``patience > 0``, training stops early and the best epoch's weights
    are kept.
    """
    # Minibatch products are far too small for several BLAS threads to pay off (on a busy
    # machine they cost several times the work): one thread, whatever the budget.
    with limited_threads(1):
        return _train(x, y, x_val, y_val, params, n_classes=n_classes, seed=seed,
                      class_weight=class_weight)


def _train(x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
           params: Mapping[str, Any], *, n_classes: int, seed: int,
           class_weight: Mapping[int, float] | None
           ) -> tuple[DenseWeights, dict[str, list[float]], int]:
    xa, y = _augment(x), np.asarray(y, dtype=np.int64)
    trainer = DenseTrainer(params, n_classes=n_classes, n_features=xa.shape[1] - 1, seed=seed)
    if not trainer.units:  # the input dropout's 1 / (1 - rate), once instead of every epoch
        xa[:, :-1] *= trainer.scale
    sw = None
    if class_weight:
        table = np.zeros(n_classes, np.float32)
        for c, v in class_weight.items():
            table[int(c)] = v
        sw = table[y]
    has_val = x_val is not None and y_val is not None and len(y_val) > 0
    val = (_augment(x_val), np.asarray(y_val, dtype=np.int64)) if has_val else None
    stop = _EarlyStopping(int(params["patience"]))
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for e in range(int(params["epochs"])):
        for key, value in zip(("loss", "accuracy"), trainer.epoch(xa, y, sw), strict=True):
            history[key].append(value)
        if val is not None:
            val_loss, val_acc = trainer.validation(*val)
            history.setdefault("val_loss", []).append(val_loss)
            history.setdefault("val_accuracy", []).append(val_acc)
            if stop.update(e, val_loss, trainer):
                break
    weights = stop.best_weights or trainer.weights()
    if val is not None:
        return weights, history, int(np.argmin(history["val_loss"])) + 1
    return weights, history, len(history["loss"])


class _EarlyStopping:
    """``keras.callbacks.EarlyStopping(monitor="val_loss", patience, min_delta=0,
    restore_best_weights=True)`` (Keras 3 semantics; ``patience=0`` never stops and keeps
    the last weights, as no callback does)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = np.inf
        self.wait = 0
        self.best_weights: DenseWeights | None = None

    def update(self, epoch: int, val_loss: float, trainer: DenseTrainer) -> bool:
        """Record one epoch; ``True`` to stop."""
        if self.patience <= 0:
            return False
        if self.best_weights is None:
            self.best_weights = trainer.weights()
        self.wait += 1
        if val_loss < self.best:
            self.best, self.wait = val_loss, 0
            self.best_weights = trainer.weights()
            return False
        return self.wait >= self.patience and epoch > 0
