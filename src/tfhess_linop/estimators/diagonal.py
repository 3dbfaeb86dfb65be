"""The diagonal of an operator: exact, Hutchinson's estimator and XDiag."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .._checks import collective
from .._linalg import single_threaded_blas
from ._common import (
    EstimatePair,
    apply,
    apply_owned,
    as_square_operator,
    blocks,
    check_block_size,
    draw_probes,
    hutchinson_call,
    identity_diagonal,
    iv_exchangeable,
    orthonormal_range,
    spare_block,
    standard_error,
)

__all__ = ["DiagonalEstimate", "exact_diagonal", "hutchinson_diagonal", "xdiag"]


class DiagonalEstimate(EstimatePair):
    """Result of a diagonal estimator: the pair ``(estimate, standard_error)``.

    Unpacks like a tuple, ``diagonal, standard_error = xdiag(A, 40)``.

    Attributes
    ----------
    estimate : ndarray, shape (n,)
        The estimate of the diagonal of `A`.
    standard_error : ndarray, shape (n,)
        Estimated standard deviation of each entry; zeros when exact.
    method : str
        ``"hutchinson"``, ``"xdiag"`` or ``"exact"``.
    num_matvecs : int
        Number of products with `A` (columns passed to ``A.matmat``).
    """

    def __new__(cls, estimate, standard_error, *, method, num_matvecs):
        return super().__new__(
            cls,
            np.asarray(estimate, dtype=np.float64),
            np.asarray(standard_error, dtype=np.float64),
            method=method,
            num_matvecs=num_matvecs,
        )

    def __repr__(self):
        n = self.estimate.shape[0]
        return (
            f"DiagonalEstimate(n={n}, method={self.method!r}, "
            f"num_matvecs={self.num_matvecs}, "
            f"max_standard_error={float(np.max(self.standard_error, initial=0.0))!r})"
        )


def _iv_exact_diagonal(A, block_size, progress):
    A, n, comm = as_square_operator(A)
    block_size = check_block_size(block_size, n, n)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"`progress` must be True or False, got {progress!r}.")
    return A, n, comm, block_size, bool(progress)


def exact_diagonal(A, *, block_size=None, progress=False):
    """Compute the diagonal of a square operator from products with identity blocks.

    Collective over `comm` (the ``A.comm`` attribute, if any).

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The operator; only ``A.matmat`` is used.
    block_size : int, optional
        Number of identity columns per ``A.matmat`` call. Default: 64, or
        fewer so that a block takes at most 32 MiB.
    progress : bool, optional
        Show a progress bar (on rank 0 only).

    Returns
    -------
    ndarray, shape (n,)
        ``diag(A)``, from exactly n products with `A`.

    See Also
    --------
    xdiag, hutchinson_diagonal : Estimates from fewer products.

    Notes
    -----
    Entry :math:`j` is :math:`e_j^\top A e_j`; each call multiplies `A` by
    ``block_size`` consecutive columns of the identity and keeps the entries
    of the product that lie on the diagonal. This costs n products whatever
    the block size, and is meant for small n or as a reference.

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import exact_diagonal
    >>> A = np.arange(16.0).reshape(4, 4)
    >>> exact_diagonal(A, block_size=3)
    array([ 0.,  5., 10., 15.])
    >>> bool(np.array_equal(exact_diagonal(A), np.diag(A)))
    True
    """
    with collective(A, "exact_diagonal", block_size=block_size, progress=progress):
        A, n, comm, block_size, progress = _iv_exact_diagonal(A, block_size, progress)
        return identity_diagonal(A, n, block_size, comm, progress=progress)


def hutchinson_diagonal(A, num_matvecs, *, rng=None, distribution="rademacher", block_size=None):
    r"""Estimate the diagonal of a square operator with Hutchinson's estimator.

    Collective over `comm` (the ``A.comm`` attribute, if any): every rank
    draws the same probes and returns the same result.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The operator; only ``A.matmat`` is used.
    num_matvecs : int
        Number of probe vectors, i.e. of products with `A`; at least 2.
    rng : None, int, SeedSequence or numpy.random.Generator, optional
        Source of the probes.
    distribution : {"rademacher", "normal"}, optional
        Entries of the probes: random signs (the default; then the error of
        entry :math:`j` comes from the off-diagonal entries of row :math:`j`
        only) or standard normal.
    block_size : int, optional
        Number of probes per ``A.matmat`` call. Default: 64, or fewer so that
        a block takes at most 32 MiB. The result does not depend on it.

    Returns
    -------
    DiagonalEstimate
        The pair ``(estimate, standard_error)`` of arrays of shape (n,), with
        ``method="hutchinson"``.

    See Also
    --------
    xdiag : Far more accurate per product when the spectrum of `A` decays.
    exact_diagonal

    Notes
    -----
    With probes :math:`z_i` of independent entries of mean 0 and variance 1,
    :math:`\mathbb{E}[z \odot Az] = \operatorname{diag}(A)` [1]_, so

    .. math:: \hat d = \frac1m \sum_{i=1}^m z_i \odot A z_i

    is unbiased. With random signs the variance of entry :math:`j` is
    :math:`\sum_{k \ne j} a_{jk}^2 / m`. The standard errors are the sample
    standard deviations over :math:`\sqrt m`, entry by entry.

    References
    ----------
    .. [1] C. Bekas, E. Kokiopoulou and Y. Saad, "An estimator for the
       diagonal of a matrix", Applied Numerical Mathematics 57(11-12),
       1214-1229, 2007. :doi:`10.1016/j.apnum.2007.01.003`

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import hutchinson_diagonal
    >>> A = np.diag(np.arange(1.0, 6.0)) + 0.01 * np.ones((5, 5))
    >>> diagonal, standard_error = hutchinson_diagonal(A, 100, rng=0)
    >>> bool(np.all(np.abs(diagonal - np.diag(A)) < 0.01))
    True
    """
    with hutchinson_call(
        "hutchinson_diagonal", A, num_matvecs, rng, distribution, block_size
    ) as checked:
        A, n, comm, m, rng, distribution, block_size = checked
        # Running mean and sum of squared deviations, merged block by block
        # (Chan, Golub and LeVeque) so that no (n, m) array is needed.
        mean = np.zeros(n)
        squares = np.zeros(n)
        count = 0
        # Two (n, block_size) blocks, written again for every block of probes
        # (the last one in their first columns): fresh ones would cost page
        # faults (see Hessian.hvp's `out`).
        probes = np.empty((n, block_size), order="F")
        samples = np.empty((n, block_size), order="F")
        for start, stop in blocks(m, block_size):
            size = stop - start
            Z = draw_probes(rng, n, size, comm, distribution, out=probes[:, :size])
            block = apply(A, Z, out=samples[:, :size])
            block *= Z
            block_mean = block.mean(axis=1)
            block -= block_mean[:, None]
            np.square(block, out=block)
            block_squares = block.sum(axis=1)
            delta = block_mean - mean
            total = count + size
            mean += delta * (size / total)
            squares += block_squares + delta**2 * (count * size / total)
            count = total
        error = np.sqrt(squares / (m - 1) / m)
        return DiagonalEstimate(mean, error, method="hutchinson", num_matvecs=m)


def xdiag(A, num_matvecs, *, rng=None):
    r"""Estimate the diagonal of a symmetric operator with XDiag.

    Collective over `comm` (the ``A.comm`` attribute, if any): every rank
    draws the same probes and returns the same result.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The symmetric operator; only ``A.matmat`` is used.
    num_matvecs : int
        Budget of products with `A`; at least 4. XDiag uses
        ``2 * (num_matvecs // 2)`` of them (fewer when the sketch reveals that
        `A` has rank below ``num_matvecs // 2``). With ``num_matvecs >= n`` the
        diagonal is computed exactly from n products with identity columns.
    rng : None, int, SeedSequence or numpy.random.Generator, optional
        Source of the (random sign) test vectors.

    Returns
    -------
    DiagonalEstimate
        The pair ``(estimate, standard_error)`` of arrays of shape (n,), with
        ``method="xdiag"``.

    See Also
    --------
    hutchinson_diagonal, exact_diagonal

    Notes
    -----
    XDiag [1]_ is the diagonal counterpart of XTrace (see `xtrace`): with
    :math:`s = \lfloor m/2 \rfloor` random sign vectors :math:`\omega_i`,
    :math:`Y = A\Omega = QR` and :math:`P_{(i)}` the projector onto the span
    of the columns of :math:`Y` other than :math:`y_i`,

    .. math:: d_i = \operatorname{diag}(P_{(i)} A)
              + \omega_i \odot \big((I - P_{(i)}) A \omega_i\big)

    is unbiased, and :math:`\hat d = \frac1s\sum_i d_i`. With
    :math:`P_{(i)} = Q(I - s_i s_i^\top)Q^\top` (:math:`s_i` the normalised
    :math:`i`-th column of :math:`R^{-\top}`), :math:`Z = AQ` and
    :math:`\nu_i = \|R^{-\top} e_i\|`, this is

    .. math:: d_i = \operatorname{diag}(QZ^\top) - (Qs_i) \odot (Zs_i)
              + \omega_i \odot Qs_i / \nu_i ,

    at a cost of :math:`2s` products and :math:`O(ns^2)` operations. The
    standard errors are the sample standard deviations of the :math:`d_i`
    over :math:`\sqrt s`, entry by entry. When :math:`Y` is numerically
    rank deficient the projector onto its range is used for every :math:`i`.

    References
    ----------
    .. [1] E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: Making the
       most of every sample in stochastic trace estimation", SIAM Journal on
       Matrix Analysis and Applications 45(1), 1-23, 2024.
       :doi:`10.1137/23M1548323`

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import xdiag
    >>> rng = np.random.default_rng(0)
    >>> U, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    >>> A = (U * 0.5 ** np.arange(200)) @ U.T           # eigenvalues 2^-i
    >>> diagonal, standard_error = xdiag(A, 80, rng=1)
    >>> bool(np.max(np.abs(diagonal - np.diag(A))) < 1e-8)
    True
    """
    with collective(A, "xdiag", num_matvecs=num_matvecs, rng=rng), single_threaded_blas():
        A, n, comm, m, rng = iv_exchangeable(A, num_matvecs, rng, "XDiag")
        if m >= n:
            block_size = check_block_size(None, n, n)
            diagonal = identity_diagonal(A, n, block_size, comm)
            return DiagonalEstimate(diagonal, np.zeros(n), method="exact", num_matvecs=n)
        s = m // 2
        Omega = draw_probes(rng, n, s, comm, "rademacher")
        Y = apply_owned(A, Omega)
        Q, U, sigma, Vt, rank = orthonormal_range(Y)
        if rank < s:
            Q = Q @ U[:, :rank]
            Z = apply(A, Q)
            samples = np.einsum("ij,ij->i", Q, Z)[:, None] + Omega * (Y - Q @ (Q.T @ Y))
            num_used = s + rank
        else:
            # The sketch Y is not needed again: A Q is written into it.
            Z = apply(A, Q, out=spare_block(Y, Q))
            S = (U / sigma) @ Vt
            norms = np.linalg.norm(S, axis=0)
            S /= norms
            samples = _leave_one_out_samples(Omega, Q, Z, S, norms)
            num_used = 2 * s
        return DiagonalEstimate(
            samples.mean(axis=1),
            standard_error(samples, axis=1),
            method="xdiag",
            num_matvecs=num_used,
        )


def _leave_one_out_samples(Omega, Q, Z, S, norms):
    """XDiag's samples ``diag(Q Zᵀ)[:, None] - (Q S) * (Z S) + Omega * (Q S) / norms``.

    The same operations in the same order, in two (n, s) blocks: ``Q S``
    (new) and ``Z S``, written into Q's memory (Q is not needed after it).
    Each (n, s) temporary of the expression would be a fresh block, seven
    of them, 2 GB of new memory at n = 1.07M and s = 33.
    """
    low_rank = np.einsum("ij,ij->i", Q, Z)
    QS = Q @ S
    # gemm with beta = 0 reads nothing of `c`; f2py copies a `c` it cannot
    # overwrite (not Fortran-ordered float64), so the result is right either way.
    ZS = scipy.linalg.blas.dgemm(1.0, Z, S, beta=0.0, c=Q, overwrite_c=True)
    ZS *= QS
    np.subtract(low_rank[:, None], ZS, out=ZS)
    QS *= Omega
    QS /= norms
    ZS += QS
    return ZS
