"""Singular values and vectors of a symmetric operator.

- :func:`svds`, the top (or bottom) singular triplets through the Lanczos
  method on the operator itself: for a symmetric operator the singular values
  are the absolute eigenvalues, so SciPy's route through ``AᵀA`` (two
  products per step and a squared spectrum) is not needed;
- :func:`randomized_svd`, Halko-Martinsson-Tropp randomized SVD with subspace
  or block Krylov iteration, every product a batched ``matmat``.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import _checks, _mpi
from ._linalg import orthonormal_columns, orthonormal_qr, single_threaded_blas
from .eigen import eigsh
from .estimators._common import apply

__all__ = ["randomized_svd", "svds"]


def _iv_svds(A, k, which, tol, maxiter, return_singular_vectors):
    A, n = _checks.square_operator(A)
    k = _checks.positive_integer(k, "k", upper=n - 1, upper_text=f"n - 1 = {n - 1}")
    _checks.choice(which, "which", ("LM", "SM"))
    tol = _checks.nonnegative_real(tol, "tol")
    maxiter = _checks.optional_positive_integer(maxiter, "maxiter")
    if return_singular_vectors not in (True, False, "u", "vh"):
        raise ValueError(
            "`return_singular_vectors` must be True, False, 'u' or 'vh', "
            f"got {return_singular_vectors!r}."
        )
    return A, k, tol, maxiter


def svds(
    A,
    k=6,
    ncv=None,
    tol=0,
    which="LM",
    v0=None,
    maxiter=None,
    return_singular_vectors=True,
):
    """Find `k` singular values and vectors of a symmetric operator.

    For a symmetric operator :math:`A = W \\Lambda W^T`, the singular values
    are :math:`|\\lambda_i|`, with left vectors :math:`w_i` and right vectors
    :math:`\\mathrm{sign}(\\lambda_i) w_i`. This function computes the `k`
    eigenvalues of largest (or smallest) magnitude with :func:`eigsh`: one
    product per Lanczos step, where :func:`scipy.sparse.linalg.svds` makes
    two (it works on :math:`A^T A`: one product with `A` and one with
    :math:`A^T`), and no squared spectrum (which squares the condition
    number and the size of rounding errors in the small singular values).

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real **symmetric** operator (symmetry is assumed, not checked; see
        :func:`tfhess_linop.symmetry_test`).
    k : int, optional
        Number of singular triplets, ``0 < k < n``.
    ncv, tol, v0, maxiter
        Passed to :func:`eigsh`.
    which : {"LM", "SM"}, optional
        Largest or smallest singular values.
    return_singular_vectors : {True, False, "u", "vh"}, optional
        As in :func:`scipy.sparse.linalg.svds`: both factors, none, or only
        one of them (the other is returned as None).

    Returns
    -------
    U : ndarray, shape (n, k)
        Left singular vectors, each column's largest-magnitude entry positive.
    s : ndarray, shape (k,)
        Singular values in **ascending** order, like SciPy's ``svds``
        (:func:`numpy.linalg.svd` and :func:`randomized_svd` sort them
        descending).
    Vt : ndarray, shape (k, n)
        Right singular vectors as rows, ``A ≈ U @ diag(s) @ Vt``.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> rng = np.random.default_rng(0)
    >>> Q = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    >>> A = Q @ np.diag(np.linspace(-8.0, 5.0, 40)) @ Q.T
    >>> U, s, Vt = thl.svds(A, k=3)
    >>> np.allclose(s, np.linalg.svd(A, compute_uv=False)[:3][::-1])
    True
    >>> np.allclose(A @ Vt.T, U * s)
    True
    """
    with _checks.collective(
        A,
        "svds",
        k=k,
        ncv=ncv,
        tol=tol,
        which=which,
        v0=v0,
        maxiter=maxiter,
        return_singular_vectors=return_singular_vectors,
    ):
        A, k, tol, maxiter = _iv_svds(A, k, which, tol, maxiter, return_singular_vectors)
        if return_singular_vectors is False:
            w = eigsh(
                A,
                k,
                which=which,
                ncv=ncv,
                tol=tol,
                v0=v0,
                maxiter=maxiter,
                return_eigenvectors=False,
            )
            return np.sort(np.abs(w))
        w, W = eigsh(A, k, which=which, ncv=ncv, tol=tol, v0=v0, maxiter=maxiter)
        order = np.argsort(np.abs(w), kind="stable")
        w, W = w[order], W[:, order]
        largest = np.argmax(np.abs(W), axis=0)
        W = W * np.sign(W[largest, np.arange(k)])
        U = W
        Vt = (W * np.where(w < 0, -1.0, 1.0)).T
        s = np.abs(w)
        if return_singular_vectors == "u":
            return U, s, None
        if return_singular_vectors == "vh":
            return None, s, Vt
        return U, s, Vt


def _iv_randomized_svd(A, k, oversample, n_iter, method, rng):
    A, n = _checks.square_operator(A)
    k = _checks.positive_integer(k, "k", upper=n, upper_text=f"n = {n}")
    oversample = _checks.nonnegative_integer(oversample, "oversample")
    n_iter = _checks.nonnegative_integer(n_iter, "n_iter")
    _checks.choice(method, "method", ("subspace", "krylov"))
    return A, n, k, oversample, n_iter, _checks.generator(rng)


def randomized_svd(A, k, *, oversample=10, n_iter=2, method="subspace", rng=None):
    """Approximate the `k` largest singular triplets of a symmetric operator.

    The randomized SVD of Halko, Martinsson and Tropp [1]_: a Gaussian test
    matrix Ω with ``l = k + oversample`` columns, a basis Q of a subspace
    that captures the range of `A`, and the SVD of the small matrix
    ``Qᵀ A``. Two ways of building Q, both re-orthonormalised at every step:

    ``"subspace"``
        Subspace (power) iteration [1]_ (Alg. 4.4):
        ``Q ← orth(A Q)``, `n_iter` times, starting from ``orth(A Ω)``;
        Q has ``l`` columns.
    ``"krylov"``
        Block Krylov iteration [2]_: Q is an orthonormal basis of
        ``[A Ω, A² Ω, ..., A^(n_iter+1) Ω]``, ``(n_iter + 1) l`` columns,
        and the Rayleigh-Ritz step uses all of them. At the same number of
        products it is at least as accurate as subspace iteration, and much
        more so when the singular values decay slowly.

    Either way, one call costs ``(n_iter + 2) l`` products, made as
    ``n_iter + 2`` batched products ``A.matmat`` of ``l`` columns (a
    Hessian operator computes each block as one batched Hessian-vector
    product). Where the basis would exceed n columns it is truncated to n
    (then the result is exact up to rounding).

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real **symmetric** operator (for ``A = Aᵀ``, ``Aᵀ Q = A Q``; no
        product with ``Aᵀ`` is made).
    k : int
        Number of singular triplets, ``0 < k <= n``.
    oversample : int, optional
        Extra columns of the test matrix, ``p`` in [1]_.
    n_iter : int, optional
        Number of power or Krylov steps, ``q``; 0 is the plain randomized
        range finder.
    method : {"subspace", "krylov"}, optional
    rng : int or numpy.random.Generator, optional
        Seed or generator for Ω; the draw is the same on every MPI rank.

    Returns
    -------
    U : ndarray, shape (n, k)
    s : ndarray, shape (k,)
        Singular values, descending, like :func:`numpy.linalg.svd`.
    Vt : ndarray, shape (k, n)

    See Also
    --------
    svds : Lanczos-based; accurate to a tolerance, but one product at a time.

    Notes
    -----
    With gaps in the spectrum, the error of the j-th singular value decays
    like :math:`(\\sigma_{l+1}/\\sigma_j)^{2q+2}` for subspace iteration and
    faster for block Krylov [2]_; ``n_iter=0`` has no such decay.

    References
    ----------
    .. [1] N. Halko, P. G. Martinsson, J. A. Tropp, "Finding structure with
       randomness: probabilistic algorithms for constructing approximate
       matrix decompositions", SIAM Review 53(2), 2011.
    .. [2] C. Musco, C. Musco, "Randomized block Krylov methods for stronger
       and faster approximate singular value decomposition", NeurIPS 2015.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> rng = np.random.default_rng(0)
    >>> Q = np.linalg.qr(rng.standard_normal((200, 200)))[0]
    >>> A = Q @ np.diag(0.8 ** np.arange(200)) @ Q.T
    >>> U, s, Vt = thl.randomized_svd(A, 5, n_iter=2, rng=0)
    >>> np.allclose(s, np.linalg.svd(A, compute_uv=False)[:5], rtol=1e-5)
    True
    >>> U, s, Vt = thl.randomized_svd(A, 5, n_iter=2, method="krylov", rng=0)
    >>> np.allclose(s, 0.8 ** np.arange(5), rtol=1e-12)
    True
    """
    with (
        _checks.collective(
            A, "randomized_svd", k=k, oversample=oversample, n_iter=n_iter, method=method, rng=rng
        ),
        single_threaded_blas(),
    ):
        A, n, k, oversample, n_iter, rng = _iv_randomized_svd(A, k, oversample, n_iter, method, rng)
        width = min(k + oversample, n)
        omega = _mpi.draw(rng, (n, width), _checks.communicator(A))
        # Every block is ours and is written again and again (by a
        # HessianOperator directly): products into their inputs, bases into
        # the products. A fresh (n, l) block costs page faults on machines
        # that return freed memory (1.4 s of a 9.5 s call at n = 1.07M).
        A_omega = apply(A, omega, out=omega)
        if method == "subspace":
            Q = orthonormal_columns(A_omega)
            for _ in range(n_iter):
                Q = orthonormal_columns(apply(A, Q, out=Q), out=Q)
            AQ = apply(A, Q, out=omega)
        else:
            Q, AQ = _krylov_basis(A, A_omega, n_iter)
        return _rayleigh_ritz(Q, AQ, k)


def _krylov_basis(A, A_omega, n_iter):
    """Q and A Q for the orthonormalised block Krylov basis ``[A Ω, A² Ω, ..., A^(n_iter+1) Ω]``.

    Both are built in place in two Fortran-ordered (n, total) arrays, whose
    leading columns are the basis so far (no concatenation per step: at
    n = 1.07M, `np.hstack` of the blocks took 4.4 s of a 29 s call).
    """
    n, width = A_omega.shape
    widths = [width]
    for _ in range(n_iter):
        room = n - sum(widths)
        if room == 0:
            break
        widths.append(min(width, room))
    total = sum(widths)
    basis = np.empty((n, total), order="F")
    products = np.empty((n, total), order="F")
    orthonormal_columns(A_omega, out=basis[:, :width])
    start = 0
    for previous, following in itertools.pairwise(widths):
        stop = start + previous
        product = apply(A, basis[:, start:stop], out=products[:, start:stop])
        orthonormal_columns(
            product[:, :following], basis[:, :stop], out=basis[:, stop : stop + following]
        )
        start = stop
    apply(A, basis[:, start:], out=products[:, start:])
    return basis, products


def _rayleigh_ritz(Q, AQ, k):
    """The `k` largest singular triplets of ``Qᵀ A = (A Q)ᵀ`` (``A = Aᵀ``).

    ``A Q = P R`` (Cholesky QR), ``Rᵀ = u diag(s) wᵀ``, so ``Qᵀ A = u diag(s)
    (P w)ᵀ``: an SVD of an (l, l) matrix instead of the (l, n) one, which
    took 2.8 s for l = 20 and 15.9 s for l = 60 at n = 1.07M. `AQ` is
    overwritten by P.
    """
    P, R = orthonormal_qr(AQ, overwrite=True)
    small_u, s, wt = np.linalg.svd(R.T)
    return Q @ small_u[:, :k], s[:k], wt[:k] @ P.T
