"""Matvec cost by data source and batch size, and the recurrent-model block fallback (#10).

Run as ``python benchmarks/data_sources.py [--rounds R]``; prints a Markdown
table. Every ratio is taken in the same interleaved rounds (medians):

- a matvec over an 8,192-sample ``tf.data.Dataset`` in batches of 512, and
  over the same arrays with ``batch_size=32``, each ÷ the matvec over the
  in-memory arrays with ``batch_size=512`` (784-128-10 MLP, float32);
- on an Embedding + LSTM model (256 samples, 20 steps, 32 units), where
  ``vectorized_map`` cannot vectorise the while loop, ``matmat(32)`` per
  column ÷ one matvec.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import tfhess_linop as thl


def _mlp_operators(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(128, activation="tanh"), keras.layers.Dense(10)]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.standard_normal((8192, 784)).astype("float32")
    y = rng.integers(0, 10, 8192)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(512)
    return {
        "arrays, batch_size=512": thl.Hessian.from_keras(model, x=x, y=y, batch_size=512),
        "tf.data.Dataset, batches of 512": thl.Hessian.from_keras(model, x=dataset),
        "arrays, batch_size=32": thl.Hessian.from_keras(model, x=x, y=y, batch_size=32),
    }


def _lstm_operator(rng):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            keras.layers.Embedding(50, 8),
            keras.layers.LSTM(32),
            keras.layers.Dense(1),
        ]
    )
    x = rng.integers(0, 50, (256, 20))
    y = rng.standard_normal((256, 1)).astype("float32")
    return thl.Hessian.from_keras(model, "mse", x, y)


def _elapsed(function, argument):
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


def measure(rounds):
    """Median seconds per case over interleaved rounds, and the ratios."""
    rng = np.random.default_rng(0)
    mlp = _mlp_operators(rng)
    lstm = _lstm_operator(rng)
    v = rng.standard_normal(next(iter(mlp.values())).n)
    u = rng.standard_normal(lstm.n)
    block = rng.standard_normal((lstm.n, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's one PerformanceWarning
        for H in mlp.values():
            H.hvp(v)
        lstm.hvp(u)
        lstm.hvp(block)
        times = {name: [] for name in [*mlp, "lstm matvec", "lstm matmat(32) per column"]}
        for _ in range(rounds):
            for name, H in mlp.items():
                times[name].append(_elapsed(H.hvp, v))
            times["lstm matvec"].append(_elapsed(lstm.hvp, u))
            times["lstm matmat(32) per column"].append(_elapsed(lstm.hvp, block) / 32)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["arrays, batch_size=512"]
    ratios = {name: medians[name] / base for name in mlp}
    ratios["lstm matvec"] = 1.0
    ratios["lstm matmat(32) per column"] = (
        medians["lstm matmat(32) per column"] / medians["lstm matvec"]
    )
    return medians, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    medians, ratios = measure(args.rounds)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; {args.rounds} rounds\n")
    print("| case | median | ratio |\n|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.1f} ms | {ratios[name]:.2f}× |")


if __name__ == "__main__":
    main()
