"""Run under ``mpiexec -n P``: a failure on one rank makes every rank raise.

Each scenario fails on the last rank only. Every rank records the exception
type it saw; rank 0 gathers them and writes them as JSON to ``sys.argv[1]``.
Without the error agreement the healthy ranks would wait forever in the
next collective; the test runs this script under a timeout.
"""

import json
import os
import signal
import sys
import time

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
timings = {}


def outcome(name, action):
    # BaseException: KeyboardInterrupt, SystemExit and GeneratorExit are scenarios too.
    start = time.perf_counter()
    try:
        action()
    except BaseException as exc:  # recorded, checked by the test
        outcomes[name] = f"{type(exc).__name__}: {exc}"
    else:
        outcomes[name] = "no error"
    timings[name] = time.perf_counter() - start


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


def quartic_hessian(loss_extra=None):
    """A fresh Hessian (traced on its first product) of a 6-parameter quartic."""
    point = tf.Variable(np.linspace(0.5, 1.5, 6))

    def loss(w):
        if loss_extra is not None:
            loss_extra()
        return tf.reduce_sum(w**4) + tf.reduce_sum(w[1:] * w[:-1])

    return thl.Hessian(loss, point, comm=comm)


# Any BaseException inside a product (here: while the loss is traced, on the
# first product of eigsh) ends with every rank raising.
for exception in (KeyboardInterrupt, SystemExit, GeneratorExit):

    def raise_on_faulty(exception=exception):
        if faulty:
            raise exception("interrupted in a product")

    outcome(
        f"{exception.__name__} in a product",
        lambda raise_on_faulty=raise_on_faulty: thl.eigsh(
            quartic_hessian(raise_on_faulty), k=1, which="LA"
        ),
    )


def interrupted_between_products():
    """KeyboardInterrupt on the faulty rank outside any product, after three of them."""
    H = quartic_hessian()
    hvp, calls = H.hvp, []

    def counting_hvp(v, **options):  # `out`, from the package's algorithms
        calls.append(1)
        if faulty and len(calls) > 3:
            raise KeyboardInterrupt("interrupted between products")
        return hvp(v, **options)

    H.hvp = counting_hvp
    thl.eigsh(H, k=1, which="LA")


outcome("KeyboardInterrupt between products", interrupted_between_products)


def nan_v0_on_one_rank():
    v0 = np.ones(6)
    if faulty:
        v0[2] = np.nan
    thl.eigsh(quartic_hessian(), k=1, v0=v0)


outcome("argument error on one rank", nan_v0_on_one_rank)

# Mismatched calls: a Python error on every rank, not "Message truncated".
outcome("eigsh with different k", lambda: thl.eigsh(quartic_hessian(), k=2 if faulty else 1))
outcome(
    "eigsh against lobpcg",
    lambda: (thl.lobpcg if faulty else thl.eigsh)(quartic_hessian(), 1),
)
outcome(
    "products of different shapes",
    lambda: quartic_hessian().hvp(np.ones((6, 2)) if faulty else np.ones(6)),
)
outcome(
    "gradient against product",
    lambda: quartic_hessian().gradient() if faulty else quartic_hessian().hvp(np.ones(6)),
)
outcome(
    "estimators with different num_matvecs",
    lambda: thl.hutchinson_trace(quartic_hessian(), 12 if faulty else 10, rng=0),
)


def real_sigint(delay):
    """A real SIGINT on the faulty rank, `delay` s into a power iteration that never ends.

    The signal lands wherever that rank is: in TensorFlow, in an exchange, or
    in NumPy between products. Returns the time from the signal to the
    raise, as seen by each rank.
    """
    H = quartic_hessian()
    H.hvp(np.ones(6))
    fired = []
    if faulty:

        def alarm(signum, frame):
            fired.append(time.time())
            os.kill(os.getpid(), signal.SIGINT)

        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        thl.power_iteration(H, tol=0.0, maxiter=10**8, rng=0)
    finally:
        raised = time.time()
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        fired = comm.bcast(fired[0] if fired else None, root=size - 1)
        timings[f"SIGINT after {delay} s: seconds to raise"] = raised - fired


for delay in (0.3, 0.55, 0.8, 1.05, 1.3):
    outcome(f"SIGINT after {delay} s", lambda delay=delay: real_sigint(delay))

# The communicator still works after all of that.
outcome(
    "healthy afterwards",
    lambda: thl.Hessian(lambda w: tf.reduce_sum(w**2), w, comm=comm).gradient(),
)

gathered = comm.gather({**outcomes, "timings": timings}, root=0)
if rank == 0:
    with open(sys.argv[1], "w") as stream:
        json.dump(gathered, stream)
