r"""Inverse operators: :math:`(A - \sigma I)^{-1}` applied by an iterative solve.

:func:`inverse` wraps a symmetric operator's shifted inverse as a
``LinearOperator``: each product solves one linear system by MINRES
(symmetric, possibly indefinite) or CG (positive definite), counts the
Hessian-vector products it spends, and reports a solve that did not
converge. It is the ``OPinv`` of shift-invert :func:`tfhess_linop.eigsh`,
and, with a negative shift :math:`\sigma = -\lambda`, the damped inverse
:math:`(H + \lambda I)^{-1}` of influence functions and trust-region steps.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _checks
from .solve import NEGATIVE_CURVATURE_INFO, cg, minres

__all__ = ["InverseOperator", "inverse"]

METHODS = ("minres", "cg")


class InverseOperator(LinearOperator):
    r"""The shifted inverse :math:`(A - \sigma I)^{-1}`, one solve per product.

    Made by :func:`inverse`; see there for the parameters.

    Attributes
    ----------
    operator : LinearOperator
        The operator A.
    shift : float
        :math:`\sigma`.
    method : {"minres", "cg"}
    rtol : float
    maxiter : int or None
    strict : bool
    comm : mpi4py communicator or None
        ``A.comm``: with one, every product is collective.
    n_hvp : int
        Products with A (Hessian-vector products) spent by all solves so
        far. Reset it by assigning 0.
    n_solves : int
        Linear systems solved (one per column).
    n_unconverged : int
        Solves that did not converge (each one warned, or raised).
    last_result : SolveResult or None
        The outcome of the last solve.
    """

    def __init__(self, operator, shift, method, rtol, maxiter, strict):
        self.operator = operator
        self.shift = shift
        self.method = method
        self.rtol = rtol
        self.maxiter = maxiter
        self.strict = strict
        self.comm = _checks.communicator(operator)
        self.n_hvp = 0
        self.n_solves = 0
        self.n_unconverged = 0
        self.last_result = None
        self._shifted = operator if shift == 0.0 else _Shifted(operator, shift)
        super().__init__(dtype=np.dtype(np.float64), shape=operator.shape)

    def __repr__(self):
        n = self.shape[0]
        return (
            f"<{n}x{n} InverseOperator of A - {self.shift!r} I by {self.method}, "
            f"rtol={self.rtol!r}, {self.n_solves} solves, {self.n_hvp} products>"
        )

    def _solve(self, b):
        if self.method == "minres":
            result = minres(
                self.operator, b, shift=self.shift, rtol=self.rtol, maxiter=self.maxiter
            )
        else:
            result = cg(self._shifted, b, rtol=self.rtol, maxiter=self.maxiter)
        self.n_hvp += result.n_matvec
        self.n_solves += 1
        self.last_result = result
        # MINRES also stops (info 0) at a least-squares solution of a singular
        # system, whose residual stays above the tolerance: not an inverse.
        solved = result.info == 0 and result.residual_norm <= self.rtol * np.linalg.norm(b)
        if not solved:
            self.n_unconverged += 1
            self._report(result, b)
        return result.x

    def _report(self, result, b):
        system = f"(A - {self.shift!r} I) x = b"
        if result.info == NEGATIVE_CURVATURE_INFO:
            message = (
                f"CG on {system} met non-positive curvature "
                f"{result.negative_curvature.curvature:.3e}: A - shift I is not positive "
                "definite; use method='minres'."
            )
        else:
            target = self.rtol * float(np.linalg.norm(b))
            message = (
                f"{self.method.upper()} on {system} did not converge in {result.n_iter} "
                f"iterations: residual {result.residual_norm:.3e} > rtol * |b| = "
                f"{target:.3e}. Raise `maxiter` or `rtol`, or move the shift away from "
                "an eigenvalue."
            )
        if self.strict:
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _matvec(self, x):
        x = np.asarray(x)
        if np.iscomplexobj(x):
            return self._matvec(x.real) + 1j * self._matvec(x.imag)
        return self._solve(np.asarray(x, dtype=np.float64).reshape(-1))

    def _matmat(self, X):
        X = np.asarray(X)
        if np.iscomplexobj(X):
            return self._matmat(X.real) + 1j * self._matmat(X.imag)
        columns = [self._solve(np.asarray(X[:, j], dtype=np.float64)) for j in range(X.shape[1])]
        return np.stack(columns, axis=1) if columns else np.zeros(X.shape)

    def _adjoint(self):
        return self

    _transpose = _adjoint


class _Shifted(LinearOperator):
    """A - shift I, keeping A's communicator (CG has no shift of its own)."""

    def __init__(self, operator, shift):
        self.operator = operator
        self.shift = shift
        self.comm = _checks.communicator(operator)
        super().__init__(dtype=np.dtype(np.float64), shape=operator.shape)

    def _matvec(self, x):
        return self.operator.matvec(x) - self.shift * np.asarray(x).reshape(-1)

    def _adjoint(self):
        return self


def _iv_inverse(A, shift, method, rtol, maxiter, strict):
    A, _ = _checks.square_operator(A)
    shift = _checks.real(shift, "shift")
    _checks.choice(method, "method", METHODS)
    rtol = _checks.nonnegative_real(rtol, "rtol")
    maxiter = _checks.optional_positive_integer(maxiter, "maxiter")
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"`strict` must be True or False, got {strict!r}.")
    return A, shift, method, rtol, maxiter, bool(strict)


def inverse(A, shift=0.0, *, method="minres", rtol=1e-10, maxiter=None, strict=False):
    r"""Return :math:`(A - \sigma I)^{-1}` as a ``LinearOperator``, applied by solves.

    Each product ``Ainv @ b`` solves :math:`(A - \sigma I)\,x = b` from
    :math:`x_0 = 0` to the relative residual `rtol`, by :func:`minres`
    (any symmetric operator, indefinite or not: a shift inside the
    spectrum) or :func:`cg` (only for :math:`A - \sigma I` positive
    definite: a shift below the spectrum; about half the work per iteration
    on the vectors, the same products). A ``matmat`` solves column by column.

    A solve that does not converge is never silent: it warns
    (`RuntimeWarning`), or raises `RuntimeError` with ``strict=True``; so
    does CG when it meets non-positive curvature (A - σI is not positive
    definite).

    Products are collective over ``A.comm`` when `A` has one (each solve is
    a :func:`minres` or :func:`cg` call).

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator, e.g. ``tfhess_linop.as_linop(H)``.
    shift : float, optional
        :math:`\sigma`. A negative shift :math:`-\lambda` gives the damped
        inverse :math:`(A + \lambda I)^{-1}`.
    method : {"minres", "cg"}, optional
    rtol : float, optional
        Relative residual tolerance of each solve, :math:`\|b - (A - \sigma
        I) x\| \le rtol\,\|b\|` (MINRES also stops at a least-squares
        solution when :math:`A - \sigma I` is singular; see :func:`minres`).
    maxiter : int, optional
        Iterations (products) per solve; the solver's default (5n for
        MINRES, 10n for CG) when None.
    strict : bool, optional
        Raise instead of warning when a solve does not converge.

    Returns
    -------
    InverseOperator
        A symmetric float64 ``LinearOperator``; ``n_hvp`` counts the
        products with A, ``n_solves`` the solves, ``last_result`` holds the
        last :class:`SolveResult`.

    See Also
    --------
    eigsh : with `sigma`, uses this inverse for its shift-invert mode.

    Notes
    -----
    The damped inverse :math:`(H + \lambda I)^{-1} g` is the building block
    of influence functions (the effect of a training sample with gradient
    :math:`g` on a test loss with gradient :math:`g_t` is
    :math:`-g_t^\top (H + \lambda I)^{-1} g`) and of Levenberg--Marquardt
    and trust-region steps :math:`p = -(H + \lambda I)^{-1} g`; with
    :math:`\lambda` above :math:`-\lambda_{\min}(H)` the shifted operator
    is positive definite and ``method="cg"`` applies.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> H = np.array([[12.0, 18.0], [18.0, 12.0]])   # eigenvalues 30 and -6
    >>> b = np.array([1.0, 2.0])
    >>> Hinv = thl.inverse(H, shift=1.0)
    >>> np.allclose(Hinv @ b, np.linalg.solve(H - np.eye(2), b))
    True

    The damped inverse, by CG, with :math:`\lambda = 10 > 6`:

    >>> damped = thl.inverse(H, shift=-10.0, method="cg")
    >>> np.allclose(damped @ b, np.linalg.solve(H + 10.0 * np.eye(2), b))
    True
    >>> thl.inverse(H, shift=-1.0, method="cg", strict=True) @ np.array([1.0, -1.0])
    Traceback (most recent call last):
    ...
    RuntimeError: CG on (A - -1.0 I) x = b met non-positive curvature -5.000e+00: ...
    """
    A, shift, method, rtol, maxiter, strict = _iv_inverse(A, shift, method, rtol, maxiter, strict)
    return InverseOperator(A, shift, method, rtol, maxiter, strict)
