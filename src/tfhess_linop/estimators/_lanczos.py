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
    """
    num_probes, n = starts.shape
    basis = np.empty((num_probes, num_steps, n))
    basis[:, 0] = starts / np.linalg.norm(starts, axis=1, keepdims=True)
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
        current = basis[active, j]
        W = apply(A, current.T).T
        alpha = np.einsum("pn,pn->p", current, W)
        diagonals[active, j] = alpha
        W -= alpha[:, None] * current
        if j > 0:
            W -= off_diagonals[active, j - 1, None] * basis[active, j - 1]
        norms = np.linalg.norm(W, axis=1)
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
            W[row], norms[row] = _reorthogonalize(basis[active[row], : j + 1], W[row], norms[row])
            estimate[row, : j + 1] = _EPS
        forced[active] = lost & ~forced[active]
        omega_previous[active], omega[active] = omega[active], estimate
        omega[active, j + 1] = 1.0
        off_diagonals[active, j] = norms
        invariant = norms <= _BREAKDOWN_TOLERANCE * scale[active]
        steps[active[invariant]] = j + 1
        going_on = ~invariant
        active = active[going_on]
        if active.size == 0:
            break
        basis[active, j + 1] = W[going_on] / norms[going_on, None]
    return diagonals, off_diagonals, steps


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
