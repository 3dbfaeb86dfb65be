"""Argument checks, probe draws and blocked products shared by the estimators."""

from __future__ import annotations

import contextlib

import numpy as np

from .. import _mpi
from .._checks import collective, communicator, generator, integer_at_least, square_operator
from .._linalg import all_finite, orthonormal_qr, single_threaded_blas

# Probe entries of the Hutchinson-type estimators.
PROBE_DISTRIBUTIONS = ("rademacher", "normal")

# Default block of probes: at most 64 columns (batched HVPs gain little
# beyond a few dozen columns and their memory grows with the block) and at
# most 32 MiB of float64 entries.
_DEFAULT_BLOCK_COLUMNS = 64
_DEFAULT_BLOCK_ENTRIES = 2**22


def as_square_operator(A):
    """Return `A` as a real square `LinearOperator`, its size and its communicator."""
    A, n = square_operator(A)
    return A, n, _mpi.resolve_comm(communicator(A))


def check_block_size(block_size, total, n):
    """Number of columns per product: `block_size`, or the default (64, 32 MiB)."""
    if block_size is None:
        columns = min(_DEFAULT_BLOCK_COLUMNS, _DEFAULT_BLOCK_ENTRIES // max(n, 1))
        return max(1, min(total, columns))
    return min(integer_at_least(block_size, "block_size", 1), max(total, 1))


def iv_hutchinson(A, num_matvecs, rng, distribution, block_size):
    """Validate the arguments shared by `hutchinson_trace` and `hutchinson_diagonal`."""
    A, n, comm = as_square_operator(A)
    num_matvecs = integer_at_least(
        num_matvecs, "num_matvecs", 2, " (two probes give a standard error)"
    )
    distribution = check_distribution(distribution, PROBE_DISTRIBUTIONS)
    block_size = check_block_size(block_size, num_matvecs, n)
    return A, n, comm, num_matvecs, generator(rng), distribution, block_size


@contextlib.contextmanager
def hutchinson_call(name, A, num_matvecs, rng, distribution, block_size):
    """The collective call of a Hutchinson estimator; yields its checked arguments.

    Collective over the operator's communicator (see `_checks.collective`).
    """
    with (
        collective(
            A,
            name,
            num_matvecs=num_matvecs,
            rng=rng,
            distribution=distribution,
            block_size=block_size,
        ),
        single_threaded_blas(),
    ):
        yield iv_hutchinson(A, num_matvecs, rng, distribution, block_size)


def iv_exchangeable(A, num_matvecs, rng, method):
    """Validate the arguments of the exchangeable estimators (XTrace, XDiag)."""
    A, n, comm = as_square_operator(A)
    num_matvecs = integer_at_least(num_matvecs, "num_matvecs", 4, f" for {method}")
    return A, n, comm, num_matvecs, generator(rng)


def check_distribution(distribution, allowed):
    """Check that `distribution` is one of `allowed`."""
    if distribution not in allowed:
        names = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"`distribution` must be {names}, got {distribution!r}.")
    return distribution


def draw_probes(rng, n, k, comm, distribution, out=None):
    """Draw `k` probe vectors of length `n` as the columns of an (n, k) array.

    Collective over `comm`: the probes are identical on every rank. Rows are
    drawn probe by probe, so consecutive draws of k1 and k2 probes give the
    same probes as one draw of k1 + k2. With `out` (a Fortran-ordered
    (n, k) float64 array, reused by the caller), the probes are drawn into it.
    """
    rows = None if out is None else out.T
    return _mpi.draw(rng, (k, n), comm, distribution=distribution, out=rows).T


def apply(A, X, out=None):
    """``A @ X`` as a float64 array of shape (n, k), through one `matmat` call.

    With `out` (float64, X's shape; it may be X), the result is written
    there: a `HessianOperator` (``_matmat_into``) writes its products into
    it directly.
    """
    X = np.asarray(X, dtype=np.float64)
    into = getattr(A, "_matmat_into", None)
    if out is not None and into is not None:
        AX = into(X, out)
    else:
        AX = np.asarray(A.matmat(X), dtype=np.float64).reshape(X.shape)
        if out is not None:
            np.copyto(out, AX)
            AX = out
    if not all_finite(AX):
        raise ValueError("`A` returned non-finite values (inf or nan) in a product.")
    return AX


def apply_owned(A, X):
    """``A @ X`` in a new Fortran-ordered float64 array that nothing else holds.

    `A` may return an array of its own (an identity returns `X` itself):
    the estimators that later write into the result (`spare_block`) take
    it from here.
    """
    return apply(A, X, out=np.empty(X.shape, order="F"))


def spare_block(spare, X):
    """`spare` (from `apply_owned`, no longer needed) as the `out` of ``apply(A, X)``.

    XTrace and XDiag write ``A Q`` into their sketch once its basis Q is
    taken, instead of into a fresh block; None (a fresh block) where the
    two share memory.
    """
    return None if np.may_share_memory(spare, X) else spare


def blocks(total, block_size):
    """Yield ``(start, stop)`` of consecutive blocks of `block_size` up to `total`."""
    for start in range(0, total, block_size):
        yield start, min(start + block_size, total)


def standard_error(samples, axis=0):
    """Standard error of the mean of `samples` along `axis` (needs two samples)."""
    count = samples.shape[axis]
    return np.std(samples, axis=axis, ddof=1) / np.sqrt(count)


def orthonormal_range(Y):
    """Orthonormal basis of range(`Y`), the SVD of its triangular factor, and the rank.

    Returns ``Q`` (n, s) with orthonormal columns and ``U`` (s, s), the
    singular values ``sigma`` (s,) in decreasing order and ``Vt`` (s, s), all
    orthogonal, with ``Y = Q @ U @ diag(sigma) @ Vt``, and the numerical rank
    of `Y`. ``Q @ U`` holds the left singular vectors of `Y`; the callers fold
    `U` into their small matrices instead of forming it (an n x s x s product).
    """
    n, s = Y.shape
    Q, R = orthonormal_qr(Y)
    U, sigma, Vt = np.linalg.svd(R)
    tolerance = max(n, s) * np.finfo(np.float64).eps * (sigma[0] if s else 0.0)
    rank = int(np.count_nonzero(sigma > tolerance))
    return Q, U, sigma, Vt, rank


def identity_diagonal(A, n, block_size, comm, progress=False):
    """Diagonal of `A` from products with blocks of identity columns (n products)."""
    diagonal = np.empty(n)
    starts = range(0, n, block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(
            starts,
            total=len(starts),
            desc="exact diagonal",
            unit="block",
            disable=_mpi.rank(comm) != 0,
        )
    for start in starts:
        stop = min(start + block_size, n)
        columns = np.arange(stop - start)
        E = np.zeros((n, stop - start))
        E[start + columns, columns] = 1.0
        diagonal[start:stop] = apply(A, E)[start + columns, columns]
    return diagonal


class EstimatePair(tuple):
    """An ``(estimate, standard_error)`` pair that also records how it was made.

    It unpacks like a tuple, ``estimate, standard_error = result``, and its
    other fields are attributes.
    """

    def __new__(cls, estimate, standard_error, *, method, num_matvecs):
        self = super().__new__(cls, (estimate, standard_error))
        self.method = method
        self.num_matvecs = int(num_matvecs)
        return self

    def __getnewargs_ex__(self):
        return tuple(self), {"method": self.method, "num_matvecs": self.num_matvecs}

    @property
    def estimate(self):
        """The estimate."""
        return self[0]

    @property
    def standard_error(self):
        """Estimated standard error of `estimate` (0 when it is exact)."""
        return self[1]

    def to_dict(self):
        """Plain-Python dictionary of the result (JSON-serialisable)."""
        return {
            "method": self.method,
            "estimate": np.asarray(self.estimate).tolist(),
            "standard_error": np.asarray(self.standard_error).tolist(),
            "num_matvecs": self.num_matvecs,
        }
