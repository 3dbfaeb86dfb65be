"""Lanczos runs of stochastic Lanczos quadrature, all probes in one block."""

from __future__ import annotations

import numpy as np

from ._common import apply

__all__ = ["batched_lanczos"]

# A Lanczos run stops when the next off-diagonal entry falls below this
# fraction of the largest entry of its tridiagonal matrix: the Krylov space is
# then invariant to working accuracy and further steps add only zero weights.
_BREAKDOWN_TOLERANCE = np.sqrt(np.finfo(np.float64).eps)

# DGKS criterion: reorthogonalise again when one pass removed more than
# 1 - 1/sqrt(2) of the vector's norm.
_REORTHOGONALIZE = 1 / np.sqrt(2)
# Partial reorthogonalisation keeps every |v_i . v_k| below sqrt(eps).
_EPS = np.finfo(np.float64).eps
_SEMI_ORTHOGONAL = np.sqrt(_EPS)
# Columns of a step's blocks updated together: about 256 KiB per block,
# so the three blocks of the recurrence stay in a core's L2 cache.
_CHUNK_BYTES = 2**18


def batched_lanczos(A, starts, num_steps):
    """Run Lanczos from every row of `starts` at once, one `matmat` per step.

    Returns the diagonals and off-diagonals of the tridiagonal matrices, shape
    (P, num_steps) (off-diagonal j couples steps j and j + 1), and the number
    of steps of each run.

    Orthogonality is kept by partial reorthogonalisation: Simon's recurrence
    estimates ``omega[p, k] = v_{j+1} . v_k`` for each probe from the
    tridiagonal entries alone, and a probe's new vector is orthogonalised
    against its whole basis (classical Gram-Schmidt, a second pass by the DGKS
    test) only when an estimate exceeds sqrt(eps), and once more at the next
    step. Semi-orthogonality (all ``|v_i . v_k| <= sqrt(eps)``) makes the
    tridiagonal matrix the projection of `A` onto an orthonormal basis to
    working precision, so nodes and weights are those of full
    reorthogonalisation, without its reading of the whole basis every step.

    The basis is stored step-major, ``basis[j]`` the (P, n) block of every
    probe's j-th vector: the block is the Fortran-ordered (n, P) operand of
    the step's product, whose result is written straight into the next
    block, and the three-term recurrence then runs in place there, chunk by
    chunk (see `_three_term`). One step thus reads and writes each block a
    few times instead of the dozen temporaries of a NumPy expression.
    """
    num_probes, n = starts.shape
    # One block more than steps: the last step's residual needs a place too.
    basis = np.empty((num_steps + 1, num_probes, n))
    np.divide(starts, np.linalg.norm(starts, axis=1, keepdims=True), out=basis[0])
    diagonals = np.zeros((num_probes, num_steps))
    off_diagonals = np.zeros((num_probes, num_steps))
    steps = np.full(num_probes, num_steps)
    scale = np.zeros(num_probes)
    # omega[p, k] estimates v_j . v_k and omega_previous[p, k] v_{j-1} . v_k.
    omega = np.zeros((num_probes, num_steps + 1))
    omega_previous = np.zeros((num_probes, num_steps + 1))
    omega[:, 0] = 1.0
    forced = np.zeros(num_probes, dtype=bool)
    active = np.arange(num_probes)
    for j in range(num_steps):
        current, W = _step_blocks(A, basis, j, active, num_probes)
        alpha = np.einsum("pn,pn->p", current, W)
        diagonals[active, j] = alpha
        previous = None if j == 0 else _rows(basis[j - 1], active, num_probes)
        beta = off_diagonals[active, j - 1] if j > 0 else None
        norms = np.sqrt(_three_term(W, current, alpha, previous, beta))
        scale[active] = np.maximum.reduce([scale[active], np.abs(alpha), norms])
        if j == num_steps - 1:
            break
        estimate = _omega_recurrence(
            active, j, diagonals, off_diagonals, norms, scale, omega, omega_previous
        )
        lost = forced[active] | (
            np.abs(estimate[:, :j]).max(axis=1, initial=0.0) > _SEMI_ORTHOGONAL
        )
        for row in np.flatnonzero(lost):
            W[row], norms[row] = _reorthogonalize(basis[: j + 1, active[row]], W[row], norms[row])
            estimate[row, : j + 1] = _EPS
        forced[active] = lost & ~forced[active]
        omega_previous[active], omega[active] = omega[active], estimate
        omega[active, j + 1] = 1.0
        off_diagonals[active, j] = norms
        invariant = norms <= _BREAKDOWN_TOLERANCE * scale[active]
        steps[active[invariant]] = j + 1
        # An invariant probe's block row is never read again: divide it by 1.
        np.divide(W, np.where(invariant, 1.0, norms)[:, None], out=W)
        if active.size < num_probes:
            basis[j + 1, active] = W
        active = active[~invariant]
        if active.size == 0:
            break
    return diagonals, off_diagonals, steps


def _rows(block, active, num_probes):
    """The active probes' rows of a (P, n) basis block: the block itself when all are."""
    return block if active.size == num_probes else block[active]


def _step_blocks(A, basis, j, active, num_probes):
    """The active probes' vectors ``v_j`` (rows) and ``A v_j``, from one `matmat`.

    While every probe is active, ``A v_j`` is written into ``basis[j + 1]``
    and both are views of the basis; after some probe stopped, they are
    copies of the active rows (the caller writes ``v_{j+1}`` back).
    """
    if active.size == num_probes:
        apply(A, basis[j].T, out=basis[j + 1].T)
        return basis[j], basis[j + 1]
    current = basis[j, active]
    return current, np.ascontiguousarray(apply(A, current.T).T)


def _three_term(W, current, alpha, previous, beta):
    """``W -= alpha v_j + beta v_{j-1}`` row-wise in place; the squared row norms of W.

    Chunks of columns are updated while they are in cache, so the step
    reads its three blocks once (`previous` and `beta` are None at j = 0).
    """
    squares = np.zeros(W.shape[0])
    columns = max(256, _CHUNK_BYTES // (8 * W.shape[0]))
    scratch = np.empty((W.shape[0], min(columns, W.shape[1])))
    for start in range(0, W.shape[1], columns):
        chunk = slice(start, start + columns)
        w = W[:, chunk]
        part = scratch[:, : w.shape[1]]
        np.multiply(current[:, chunk], alpha[:, None], out=part)
        np.subtract(w, part, out=w)
        if previous is not None:
            np.multiply(previous[:, chunk], beta[:, None], out=part)
            np.subtract(w, part, out=w)
        squares += np.einsum("pn,pn->p", w, w)
    return squares


def _omega_recurrence(active, j, diagonals, off_diagonals, norms, scale, omega, previous):
    """Simon's estimates of ``v_{j+1} . v_k``, k <= j, for the active probes (P, m + 1).

    With ``beta_k`` the off-diagonals, ``alpha_k`` the diagonals, and
    ``beta_j`` the norm of the new residual,
    ``beta_j w_{j+1,k} = beta_k w_{j,k+1} + (alpha_k - alpha_j) w_{j,k}
    + beta_{k-1} w_{j,k-1} - beta_{j-1} w_{j-1,k}``, plus a rounding term
    ``eps * |A|`` of the sign of the rest.
    """
    alpha = diagonals[active, : j + 1]
    beta = off_diagonals[active, : j + 1]
    w, w_previous = omega[active], previous[active]
    estimate = np.zeros_like(w)
    k = np.arange(j)
    if j > 0:
        beta_before = np.where(k > 0, beta[:, k - 1], 0.0)
        recurrence = (
            beta[:, k] * w[:, k + 1]
            + (alpha[:, k] - alpha[:, j, None]) * w[:, k]
            + beta_before * w[:, np.maximum(k - 1, 0)]
            - beta[:, j - 1, None] * w_previous[:, k]
        )
        rounding = _EPS * scale[active, None]
        estimate[:, :j] = (recurrence + np.copysign(rounding, recurrence)) / norms[:, None]
    safe = np.where(norms > 0, norms, 1.0)
    estimate[:, j] = _EPS * scale[active] / safe
    return estimate


def _reorthogonalize(V, w, norm):
    """``w`` orthogonalised against the orthonormal rows of `V`, and its norm.

    Classical Gram-Schmidt, and a second pass ("twice is enough") when the
    first cut the norm below 1/sqrt(2) of itself (the DGKS test).
    """
    for _ in range(2):
        w = w - (V @ w) @ V
        before, norm = norm, float(np.linalg.norm(w))
        if norm >= _REORTHOGONALIZE * before:
            break
    return w, norm
