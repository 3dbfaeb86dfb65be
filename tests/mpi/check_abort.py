"""Run under ``mpiexec -n P``: a rank that cannot finish an exchange aborts the job.

The last rank's ``SIGALRM`` handler raises ``SystemExit`` while that rank
waits in a product's status exchange (the other ranks arrive two seconds
later). ``SystemExit`` is not held back like ``SIGINT``, so the rank can no
longer take part in the product the others are in: it must abort the
communicator, and the job must end with a non-zero status instead of
hanging. The test runs this script under a timeout.
"""

import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from mpi4py import MPI

import tfhess_linop as thl

comm = MPI.COMM_WORLD
faulty = comm.Get_rank() == comm.Get_size() - 1
H = thl.Hessian(lambda w: tf.reduce_sum(w**4), tf.Variable(np.ones(3)), comm=comm)
H.hvp(np.ones(3))
if faulty:

    def leave(signum, frame):
        raise SystemExit("a signal handler ended this rank")

    signal.signal(signal.SIGALRM, leave)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
else:
    time.sleep(2.0)
H.hvp(np.ones(3))
print(f"rank {comm.Get_rank()} was not aborted", file=sys.stderr)
