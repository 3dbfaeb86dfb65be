"""Random draws that are identical on every rank.

A concept of its own because of its rule: every rank draws from its own
generator (so identically seeded generators stay in step), then rank 0's
draw overwrites the others, so the ranks never diverge.
"""

from __future__ import annotations

import numpy as np

from ._reductions import broadcast_array

__all__ = ["draw"]


def draw(rng, shape, comm, distribution="normal"):
    """Draw a random float64 array that is identical on every rank.

    Collective over `comm`. Every rank draws from its own generator (so
    identically seeded generators stay in step), then rank 0's draw is
    broadcast over the others.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Shape of the draw.
    comm : mpi4py communicator or None
    distribution : {"normal", "rademacher", "uniform"}
        Standard normal entries, random signs, or uniform on [0, 1).
    """
    if distribution == "normal":
        sample = rng.standard_normal(shape)
    elif distribution == "rademacher":
        sample = rng.choice(np.array([-1.0, 1.0]), size=shape)
    elif distribution == "uniform":
        sample = rng.random(shape)
    else:
        raise ValueError(
            f"`distribution` must be 'normal', 'rademacher' or 'uniform', got {distribution!r}."
        )
    return broadcast_array(np.asarray(sample, dtype=np.float64), comm)
