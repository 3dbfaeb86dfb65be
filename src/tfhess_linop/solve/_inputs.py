"""Argument checks shared by several solvers.

:func:`check_system` is common to CG, MINRES and PCG, :func:`check_nystrom`
to the Nyström preconditioner and PCG; a module of their own so that each
solver's module imports its checks without importing another solver.
"""

from __future__ import annotations

import numpy as np

from .. import _checks


def check_system(A, b, x0, rtol, atol, maxiter, M, default_maxiter):
    """Check ``A x = b`` and its tolerances; return ``A, b, x0, tol, maxiter, M``.

    `maxiter` None becomes ``default_maxiter * n``; ``tol`` is the absolute
    residual norm to reach, ``max(atol, rtol * ||b||)``.

    Examples
    --------
    >>> import numpy as np
    >>> A, b, x0, tol, maxiter, M = check_system(
    ...     np.eye(3), [3.0, 0.0, 4.0], None, 0.1, 0.0, None, None, 10
    ... )
    >>> b.tolist(), x0, tol, maxiter, M
    ([3.0, 0.0, 4.0], None, 0.5, 30, None)
    """
    A, n = _checks.square_operator(A)
    b = _checks.vector(b, n, "b")
    x0 = None if x0 is None else _checks.vector(x0, n, "x0")
    rtol = _checks.nonnegative_real(rtol, "rtol")
    atol = _checks.nonnegative_real(atol, "atol")
    if maxiter is None:
        maxiter = default_maxiter * n
    maxiter = _checks.positive_integer(maxiter, "maxiter")
    if M is not None:
        M, m = _checks.square_operator(M, "M")
        if m != n:
            raise ValueError(f"`M` must have shape ({n}, {n}) like `A`, got {M.shape}.")
    tol = max(atol, rtol * float(np.linalg.norm(b)))
    return A, b, x0, tol, maxiter, M


def check_nystrom(A, rank, oversample, shift, rng):
    """Check a Nyström sketch's arguments; return ``A, n, rank, oversample, shift, rng``.

    Examples
    --------
    >>> import numpy as np
    >>> check_nystrom(np.eye(4), 5, 0, 0.0, 0)
    Traceback (most recent call last):
    ...
    ValueError: `rank` must be an integer satisfying `0 < rank <= n = 4`, got 5.
    """
    A, n = _checks.square_operator(A)
    rank = _checks.positive_integer(rank, "rank", upper=n, upper_text=f"n = {n}")
    oversample = _checks.nonnegative_integer(oversample, "oversample")
    shift = _checks.nonnegative_real(shift, "shift")
    return A, n, rank, oversample, shift, _checks.generator(rng)
