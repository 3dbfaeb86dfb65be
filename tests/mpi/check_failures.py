"""Run under ``mpiexec -n P``: a failure on one rank makes every rank raise.

Each scenario fails on the last rank only. Every rank records the exception
type it saw; rank 0 gathers them and writes them as JSON to ``sys.argv[1]``.
Without the error agreement the healthy ranks would wait forever in the
next collective; the test runs this script under a timeout.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from mpi4py import MPI

import tfhess_linop as thl

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
faulty = rank == size - 1
outcomes = {}


def outcome(name, action):
    try:
        action()
    except Exception as exc:  # recorded, checked by the test
        outcomes[name] = f"{type(exc).__name__}: {exc}"
    else:
        outcomes[name] = "no error"


def raising_loss(w):
    if faulty:
        raise RuntimeError("this rank's loss failed")
    return tf.reduce_sum(w**3)


w = tf.Variable(np.ones(4))
outcome("loss raises", lambda: thl.Hessian(raising_loss, w, comm=comm).hvp(np.ones(4)))

nan_point = tf.Variable(np.ones(4))
outcome(
    "nan vector on one rank",
    lambda: thl.Hessian(lambda w: tf.reduce_sum(w**3), nan_point, comm=comm).hvp(
        np.full(4, np.nan) if faulty else np.ones(4)
    ),
)

keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")]
)
features = 4 if faulty else 3
x = np.ones((5, features))
outcome(
    "shape error in one shard",
    lambda: thl.Hessian.from_keras(
        model, "mse", x, np.ones((5, 1)), comm=comm, shard=False
    ).gradient(),
)

v = tf.Variable(np.ones(5 if faulty else 4))
outcome("parameter counts differ", lambda: thl.Hessian(lambda w: tf.reduce_sum(w**2), v, comm=comm))

# The communicator still works after all of that.
outcome(
    "healthy afterwards",
    lambda: thl.Hessian(lambda w: tf.reduce_sum(w**2), w, comm=comm).gradient(),
)

gathered = comm.gather(outcomes, root=0)
if rank == 0:
    with open(sys.argv[1], "w") as stream:
        json.dump(gathered, stream)
