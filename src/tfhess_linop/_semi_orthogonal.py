"""Partial reorthogonalisation for the thick-restart Lanczos method.

Full reorthogonalisation reads the whole basis once or twice per step: at
n = 10⁶ that is 100-200 MB a step, more time than a Hessian product of a
small model. Simon's partial reorthogonalisation instead keeps estimates
``omega`` of the inner products between the basis vectors, updated by a
recurrence that costs O(ncv²) flops a step, and orthogonalises a new
vector against the basis only when an estimate passes a level at which the
projected matrix ``T`` would lose accuracy. Semi-orthogonality
(inner products below sqrt(noise / ncv), with `noise` the relative error
of one step) keeps ``T`` equal to the projection of ``A`` on an
orthonormal basis of the Krylov space up to the error of the products
themselves (Simon 1984), so the Ritz values and residual estimates are
those of full reorthogonalisation.

The recurrence follows from the Lanczos relation ``A V[:j+1]ᵀ = V[:j+2]ᵀ T``,
which rounding leaves intact, and the symmetry of ``A``: for ``i < j``,
``beta omega[i, j+1] = (T omega - omega T)[i, j]`` plus the error of the
step. It holds for the arrowhead ``T`` after a thick restart as for the
tridiagonal one.

The error of a step is measured, not assumed: a product in float32 (a
Hessian of a float32 model) is symmetric only to about 1e-7 of ``|A|``,
which puts inner products of 1e-9-1e-8 into every new vector, where
float64 rounding puts 1e-16. Every full pass measures the inner products
it removes, and when they exceed the estimates the noise level is raised
to match; a pass also runs at the second step and at least every
`_CHECK_EVERY` steps, so that a noise level is measured before it is
trusted.

Reference: H. D. Simon, "The Lanczos algorithm with partial
reorthogonalization", Math. Comp. 42 (1984).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Overlaps"]

_EPS = np.finfo(np.float64).eps / 2
_EPS23 = _EPS ** (2 / 3)
# Steps between measured passes at most: the noise level is checked at
# least this often. Each pass costs what a step of full reorthogonalisation
# does.
_CHECK_EVERY = 8
_CHECK_LONGEST = 64
# The step at which the first pass measures the noise of the products:
# step 1 is the first whose new vector has an inner product (with V[0])
# that the local orthogonalisation did not remove.
_FIRST_CHECK = 1


class Overlaps:
    """Estimated inner products of the rows of a Lanczos basis of `size` rows of length `n`.

    ``omega[a, b]`` estimates ``V[a] @ V[b]`` (unit diagonal). `noise` is
    the error of one step relative to ``|A|``: float64 rounding of an inner
    product of length `n` to begin with, raised by measurements.
    """

    def __init__(self, n, size, ncv):
        self.omega = np.eye(size)
        self.rounding = _EPS * np.sqrt(n)
        self.noise = self.rounding
        self.ncv = ncv
        self.allowed = 0.0
        self.since_pass = 0
        self.passes = 0
        self.follow = False
        self.check_every = _CHECK_EVERY

    def allow(self, tol, theta, scale):
        """Cap the level by the accuracy `tol` asked of the Ritz values `theta`.

        A full pass removes inner products up to the level times ``beta``
        from the new vector without recording them in ``T``; they become
        part of the Ritz vectors' residuals. Below
        ``tol * |theta| / (|A| sqrt(ncv))`` they stay below the residuals
        the convergence test allows (ARPACK's floor eps^(2/3) for |theta|).
        """
        smallest = max(_EPS23, float(np.abs(theta).min()))
        self.allowed = tol * smallest / (scale * np.sqrt(self.ncv))

    @property
    def level(self):
        """Semi-orthogonality: a new vector is orthogonalised above this inner product."""
        return min(np.sqrt(self.noise / self.ncv), self.allowed)

    def estimate(self, T, j, beta, scale):
        """Estimated inner products of the new vector ``w / beta`` with ``V[:j + 1]``.

        `T` is the projected matrix with ``T[j, j]`` set; `scale` estimates
        ``|A|``. The error of the step is added with the sign that makes
        each estimate grow.
        """
        Tj, W = T[: j + 1, : j + 1], self.omega[: j + 1, : j + 1]
        u = Tj @ W[:, j] - W @ Tj[:, j]
        error = 2 * self.noise * scale
        u += np.copysign(error, u)
        u[j] = error  # V[j] itself was subtracted locally
        return u / beta

    def needs_pass(self, j, estimate):
        """Whether the new vector of step `j` is to be orthogonalised against the basis."""
        due = j == _FIRST_CHECK or self.since_pass + 1 >= self.check_every or self.follow
        return due or float(np.abs(estimate).max()) > self.level

    def measured(self, j, estimate, products, beta):
        """Record a full pass of step `j` that removed the inner products `products`.

        `products` are those of the new vector before its normalisation by
        `beta`. Estimates below them raise the noise level by the ratio, and
        every estimate of the basis with it (they were made with the lower
        level). The new row's inner products are then at rounding level.
        """
        self.passes += 1
        self.since_pass = 0
        self.follow = not self.follow
        found = float(np.abs(products[:j]).max(initial=0.0)) / beta
        guessed = float(np.abs(estimate[:j]).max(initial=0.0))
        if found <= guessed:
            self.check_every = min(2 * self.check_every, _CHECK_LONGEST)
        elif guessed > 0.0:
            self.check_every = _CHECK_EVERY
            ratio = found / guessed
            self.noise *= ratio
            self.omega[: j + 1, : j + 1] *= ratio
            np.fill_diagonal(self.omega, 1.0)
        self.set_row(j + 1, self.rounding)

    def skipped(self, j, estimate):
        """Record the estimates of a new vector of step `j` that was not orthogonalised."""
        self.since_pass += 1
        self.set_row(j + 1, estimate)

    def set_row(self, row, values):
        """Set the estimates between ``V[row]`` and ``V[:row]``."""
        self.omega[row, :row] = self.omega[:row, row] = values

    def restart(self, gram):
        """The basis is now rows whose inner products `gram` were measured; the rest is unset."""
        rows = gram.shape[0]
        self.omega[:] = 0.0
        self.omega[:rows, :rows] = gram
        np.fill_diagonal(self.omega, 1.0)
