"""LOBPCG for the standard symmetric problem, in blocks the solver keeps for the whole call.

The iteration of :func:`scipy.sparse.linalg.lobpcg` (Knyazev 2001) with
the same defaults, soft locking, restarts, warnings and final Rayleigh-Ritz
step, and the same products: the initial block, the active residuals of
every iteration and the final block. What differs is the work between the
products. SciPy makes fresh (n, k) temporaries for each of its dozen block
operations per iteration and one small product per Gram block; on a
1.07M-parameter Hessian that was 2.3 s outside 1.8 s of products for k = 1.
Here the blocks X, W, P and their products are column blocks of one
array allocated once: the active columns of W and P are moved to the
front in place, the Gram matrices of the Rayleigh-Ritz step are summed
over row chunks that stay in cache (one pass over the six blocks, where a
product per pair of blocks passes over each several times), P is
orthonormalised through those Gram matrices instead of in memory, and the
new X and P and the new residuals (into W) are written chunk by chunk.

The Gram matrices are always computed explicitly (SciPy switches to them
once the residuals are below sqrt(eps)): they cost no more here, and they
keep the Rayleigh-Ritz step accurate from the first iteration.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from .._linalg import orthonormal_columns, solve_right_upper, subtract_product
from ..estimators._common import apply

__all__ = ["block_lobpcg"]

# SciPy's defaults: the iteration limit, and a restart (fresh A X, no P)
# when the mean residual grows this much above the smallest one so far.
_DEFAULT_MAXITER = 20
_RESTART_GROWTH = 2.0**20
# A row chunk of the six blocks (about 0.5 MiB) stays in the L2 cache of
# one core: 2048 rows for k = 5 and 8192 for k = 1 were the fastest.
_CHUNK_BYTES = 2**19
# W is orthonormalised by one Cholesky pass, as SciPy, where its factor has
# a condition number below this (orthogonality then holds to ~1e-8, and the
# Rayleigh-Ritz step uses the explicit Gram matrix); by CholeskyQR2 with
# its Householder fallback otherwise.
_ONE_PASS_CONDITION = 1e4


class _Blocks:
    """``T = [X, W, P, A X, A W, A P]``, (n, 6k) in Fortran order, and its row chunks.

    Each block is a view of k contiguous columns of T; in W, P and their
    products the active columns are kept in front. T starts as zeros, so
    that columns no product has written yet are finite: the Gram matrices
    and the update sweep all of T, and multiply those columns by zeros.
    """

    def __init__(self, n, k):
        self.T = np.zeros((n, 6 * k), order="F")
        self.best = np.empty((n, k), order="F")
        for position, name in enumerate(("X", "W", "P", "AX", "AW", "AP")):
            setattr(self, name, self.T[:, position * k : (position + 1) * k])
        rows = max(64, _CHUNK_BYTES // (6 * k * 8))
        self.chunks = [slice(start, min(start + rows, n)) for start in range(0, n, rows)]
        self.k = k


def _select(values, k, largest):
    """Indices of the `k` wanted eigenvalues, as SciPy's (largest first when `largest`)."""
    order = np.argsort(values)
    return order[: -k - 1 : -1] if largest else order[:k]


def _residual_norms(blocks, values):
    """``R = A X - X diag(values)`` into ``blocks.W``; its column norms."""
    squares = np.zeros(blocks.k)
    for rows in blocks.chunks:
        squares += _residual_squares(blocks.T[rows], blocks.k, values)
    return np.sqrt(squares)


def _move_to_front(block, columns):
    """``block[:, :m] = block[:, columns]`` in place, for increasing `columns`."""
    for position, column in enumerate(columns):
        if position != column:
            block[:, position] = block[:, column]


def _upper_factor(gram):
    """The upper Cholesky factor of `gram`, or None where it is not positive definite."""
    try:
        factor = scipy.linalg.cholesky(gram, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    return factor if np.isfinite(factor).all() else None


def _orthonormalize(W):
    """``W ← W F⁻¹`` with ``WᵀW = FᵀF``, in place (see `_ONE_PASS_CONDITION`)."""
    factor = _upper_factor(W.T @ W)
    if factor is None or np.linalg.cond(factor) > _ONE_PASS_CONDITION:
        orthonormal_columns(W, out=W)
        return
    solved = solve_right_upper(W, factor, overwrite=True)
    if not np.shares_memory(solved, W):
        W[...] = solved


def _directions_scale(gram, k, m):
    """``F⁻¹`` with ``PᵀP = FᵀF`` for the m active P; None where PᵀP is singular.

    P is not orthonormalised in memory: the Rayleigh-Ritz step works in
    the basis ``P F⁻¹`` through its Gram matrices and coefficients, which
    saves two passes over P and A P per iteration (SciPy's two products
    with F⁻¹); ``PᵀP`` is a block of the Gram matrix the step computes anyway.
    """
    factor = _upper_factor(gram[2 * k : 2 * k + m, 2 * k : 2 * k + m])
    if factor is None:
        return None
    return scipy.linalg.solve_triangular(factor, np.eye(m), check_finite=False)


def _basis_columns(k, m, with_directions):
    """Columns of ``[X, W, P]`` in T that span the Rayleigh-Ritz basis."""
    parts = [np.arange(k), k + np.arange(m)]
    if with_directions:
        parts.append(2 * k + np.arange(m))
    return np.concatenate(parts)


def _gram(blocks):
    """``[X, W, P]ᵀ T``, (3k, 6k), summed over row chunks of T, one product each.

    A single pass over the blocks, where a product per pair of blocks
    (SciPy's) or a whole-block ``gemm`` and ``syrk`` pass over each several
    times (3.7 against 18 ms for k = 1 at n = 1.07M, 43 against 94 for k = 5).
    """
    k = blocks.k
    gram = np.zeros((3 * k, 6 * k))
    for rows in blocks.chunks:
        chunk = blocks.T[rows]
        gram += chunk[:, : 3 * k].T @ chunk
    return gram


def _rayleigh_ritz(gram, k, m, directions_scale, largest):
    """Eigenpairs of the projection on ``[X, W, P F⁻¹]``; None where its Gram matrix is singular.

    `directions_scale` is ``F⁻¹`` (None: no P). The coefficients returned
    are those of the columns ``[X, W, P]`` of T.
    """
    columns = _basis_columns(k, m, directions_scale is not None)
    scale = np.eye(len(columns))
    if directions_scale is not None:
        scale[k + m :, k + m :] = directions_scale
    gram_B = scale.T @ gram[np.ix_(columns, columns)] @ scale
    gram_A = scale.T @ gram[np.ix_(columns, 3 * k + columns)] @ scale
    try:
        values, vectors = scipy.linalg.eigh(
            0.5 * (gram_A + gram_A.T), 0.5 * (gram_B + gram_B.T), check_finite=False
        )
    except np.linalg.LinAlgError:
        return None
    chosen = _select(values, k, largest)
    return values[chosen], scale @ vectors[:, chosen]


def _update(blocks, m, with_directions, coefficients, values, keep_best):
    """``P = [W, P] C_WP``, ``X = X C_X + P`` (and A's) in place; the new residual norms.

    Both are one product of ``[X, W, P]`` with a (3k, 2k) matrix, and the
    residuals ``A X - X diag(values)`` of the new X go into W, chunk by
    chunk while the chunk is in cache. With `keep_best`, the old X is first
    copied to ``blocks.best`` (it had the smallest mean residual so far).
    """
    k = blocks.k
    columns = _basis_columns(k, m, with_directions)
    combination = np.zeros((3 * k, 2 * k))
    combination[columns, :k] = coefficients
    combination[columns[k:], k:] = coefficients[k:]
    squares = np.zeros(k)
    for rows in blocks.chunks:
        chunk = blocks.T[rows]
        if keep_best:
            blocks.best[rows] = chunk[:, :k]
        for offset in (0, 3 * k):
            new = chunk[:, offset : offset + 3 * k] @ combination
            chunk[:, offset : offset + k] = new[:, :k]
            chunk[:, offset + 2 * k : offset + 3 * k] = new[:, k:]
        squares += _residual_squares(chunk, k, values)
    return np.sqrt(squares)


def _residual_squares(chunk, k, values):
    """``R = A X - X diag(values)`` into the W columns of a chunk of T; ``Σ R²`` by column."""
    R = chunk[:, k : 2 * k]
    np.multiply(chunk[:, :k], values, out=R)
    np.subtract(chunk[:, 3 * k : 4 * k], R, out=R)
    return np.einsum("ij,ij->j", R, R)


def _final_rayleigh_ritz(A, X, k, largest, tol):
    """SciPy's last step: one more product with X and the Rayleigh-Ritz step on it alone.

    Warns, as SciPy, where the residuals of the result are above `tol`.
    """
    AX = apply(A, X)
    gram_A = X.T @ AX
    gram_B = X.T @ X
    try:
        values, vectors = scipy.linalg.eigh(
            0.5 * (gram_A + gram_A.T), 0.5 * (gram_B + gram_B.T), check_finite=False
        )
    except np.linalg.LinAlgError as error:
        raise ValueError("eigh has failed in lobpcg postprocessing") from error
    chosen = _select(values, k, largest)
    values, vectors = values[chosen], vectors[:, chosen]
    X, AX = X @ vectors, AX @ vectors
    AX -= X * values
    norms = np.sqrt(np.einsum("ij,ij->j", AX, AX))
    if norms.max() > tol:
        warnings.warn(
            f"Exited postprocessing with accuracies \n{norms}\n"
            f"not reaching the requested tolerance {tol}.",
            UserWarning,
            stacklevel=4,
        )
    return values, X


def _initial_ritz_pairs(A, X, blocks, largest):
    """Orthonormal X and A X into `blocks`, rotated to the Ritz vectors; the Ritz values."""
    orthonormal_columns(X, out=blocks.X)
    apply(A, blocks.X, out=blocks.AX)
    values, vectors = np.linalg.eigh(blocks.X.T @ blocks.AX)
    chosen = _select(values, blocks.k, largest)
    values, vectors = values[chosen], vectors[:, chosen]
    for block in (blocks.X, blocks.AX):
        block[...] = block @ vectors
    return values


def _preconditioned_residuals(A, blocks, M, active):
    """The active residuals, preconditioned, orthogonal to X and orthonormal, in ``W``; A W."""
    m = len(active)
    _move_to_front(blocks.W, active)
    W, AW = blocks.W[:, :m], blocks.AW[:, :m]
    if M is not None:
        W[...] = np.asarray(M(W) if callable(M) else M @ W, dtype=np.float64).reshape(W.shape)
    subtract_product(W, blocks.X, blocks.X.T @ W)
    _orthonormalize(W)
    apply(A, W, out=AW)


def _warn_not_converged(iteration, norms, tol, best_iteration, smallest_residual):
    warnings.warn(
        f"Exited at iteration {iteration} with accuracies \n{norms}\n"
        f"not reaching the requested tolerance {tol}.\n"
        f"Use iteration {best_iteration} instead with accuracy \n"
        f"{smallest_residual}.\n",
        UserWarning,
        stacklevel=4,
    )


def block_lobpcg(A, X, M=None, tol=None, maxiter=None, largest=True):
    """The `k` largest (or smallest) eigenpairs of the symmetric `A` from the block X (n, k).

    As ``scipy.sparse.linalg.lobpcg(A, X, M=M, tol=tol, maxiter=maxiter,
    largest=largest)`` for the standard problem: `tol` is the residual
    norm ``‖A x - λ x‖`` below which a pair is locked (default
    ``sqrt(eps) n``), `maxiter` the iteration limit (default 20), `M` a
    preconditioner applied to the active residuals. Returns the
    eigenvalues in SciPy's order (the most wanted first) and the vectors;
    warns (UserWarning) where `tol` is not reached and then returns the
    iterate with the smallest mean residual, as SciPy.
    """
    n, k = X.shape
    tol = np.sqrt(np.finfo(np.float64).eps) * n if tol is None or tol <= 0 else tol
    maxiter = _DEFAULT_MAXITER if maxiter is None else maxiter
    blocks = _Blocks(n, k)
    values = _initial_ritz_pairs(A, X, blocks, largest)
    norms = _residual_norms(blocks, values)

    locked = np.zeros(k, dtype=bool)
    smallest_residual, best_iteration = np.inf, 0
    forced_restart, iteration = False, -1
    while iteration < maxiter:
        iteration += 1
        mean_norm = norms.sum() / k
        improved = mean_norm < smallest_residual
        if improved:
            smallest_residual, best_iteration = mean_norm, iteration
        elif mean_norm > _RESTART_GROWTH * smallest_residual:
            forced_restart = True
            apply(A, blocks.X, out=blocks.AX)
        locked |= norms <= tol
        active = np.flatnonzero(~locked)
        if len(active) == 0:
            break
        _preconditioned_residuals(A, blocks, M, active)
        m = len(active)
        with_directions = iteration > 0 and not forced_restart
        if with_directions:
            for block in (blocks.P, blocks.AP):
                _move_to_front(block, active)
        gram = _gram(blocks)
        ritz = None
        if with_directions:
            scale = _directions_scale(gram, k, m)
            ritz = None if scale is None else _rayleigh_ritz(gram, k, m, scale, largest)
        if ritz is None:
            # Without the directions P (a restart), as SciPy where PᵀP is
            # singular or the Rayleigh-Ritz step with P fails.
            with_directions = False
            ritz = _rayleigh_ritz(gram, k, m, None, largest)
        if ritz is None:
            warnings.warn(
                f"eigh failed at iteration {iteration}: the Rayleigh-Ritz "
                "basis is numerically singular.",
                UserWarning,
                stacklevel=3,
            )
            if improved:
                blocks.best[...] = blocks.X
            break
        values, coefficients = ritz
        norms = _update(blocks, m, with_directions, coefficients, values, keep_best=improved)

    # `norms` are those of the current X: from the last update, or from the
    # iteration that ended the loop without one.
    mean_norm = norms.sum() / k
    if mean_norm < smallest_residual:
        smallest_residual, best_iteration = mean_norm, iteration + 1
        blocks.best[...] = blocks.X
    elif len(active) == 0 and improved:
        # The loop ended before the update that would have kept it.
        blocks.best[...] = blocks.X
    if norms.max() > tol:
        _warn_not_converged(iteration, norms, tol, best_iteration, smallest_residual)
    # The work arrays are released before the final product.
    best = blocks.best
    del blocks
    return _final_rayleigh_ritz(A, best, k, largest, tol)
