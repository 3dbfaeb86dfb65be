"""The seed's algorithms on the ``numsa`` Hessian: ``eig``, ``RandMatSVD`` and ``pCG``.

A mixin of :class:`tfhess_linop.compat.numsa.Hessian`, apart from its
evaluations because each method is the seed's name and arguments mapped
onto one of the package's algorithms (:func:`~tfhess_linop.power_iteration`,
:func:`~tfhess_linop.randomized_svd`, :func:`~tfhess_linop.pcg`). It uses
the class's ``hessian``, ``operator``, ``comm``, ``last_solve`` and its
vector helpers.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import tensorflow as tf

from .. import _checks, _mpi
from ..eigen import power_iteration
from ..solve import pcg
from ..svd import randomized_svd

__all__ = ["NumsaAlgorithms"]


class NumsaAlgorithms:
    """``eig``, ``RandMatSVD`` and ``pCG`` of :class:`tfhess_linop.compat.numsa.Hessian`."""

    def eig(self, flag, itmax=1000, tol=1e-6, rng=None):
        """An extreme eigenvalue by power iteration. Collective.

        Parameters
        ----------
        flag : {"pi-max", "pi-min"}
            The largest or the smallest (algebraic) eigenvalue.
        itmax : int, optional
            Maximum number of products per power-iteration stage.
        tol : float, optional
            Relative residual tolerance, ``‖Hv - λv‖ <= tol |λ|``.
        rng : int or numpy.random.Generator, optional
            Seed or generator of the start vector; by default drawn from
            NumPy's global random state (``np.random.seed`` fixes it).

        Returns
        -------
        tf.Tensor
            A scalar in the variables' dtype.

        See Also
        --------
        tfhess_linop.power_iteration, tfhess_linop.eigsh
        """
        which = {"pi-max": "LA", "pi-min": "SA"}.get(flag)
        if which is None:
            raise ValueError(f"`flag` must be 'pi-max' or 'pi-min'; got {flag!r}.")
        # The seed's names, not those of power_iteration, in the messages.
        itmax = _checks.positive_integer(itmax, "itmax")
        tol = _checks.nonnegative_real(tol, "tol")
        value, _, info = power_iteration(
            self.operator, which, tol=tol, maxiter=itmax, rng=_generator(rng)
        )
        if info:
            self._say(f"eig({flag!r}): no convergence to tol={tol} in {itmax} steps.")
        return tf.constant(value, dtype=self.hessian.dtype)

    def RandMatSVD(self, k, p, Krylov=1, rng=None):
        """The `k` leading singular triplets, by randomized SVD. Collective.

        ``Krylov=1`` is the randomized range finder of Halko, Martinsson and
        Tropp (their Algorithm 4.1) with ``k + p`` test vectors;
        ``Krylov=q > 1`` uses the block Krylov space
        ``[H Ω, H² Ω, ..., H^q Ω]``.

        Parameters
        ----------
        k : int
            Number of triplets.
        p : int
            Oversampling.
        Krylov : int, optional
            Number of Krylov blocks q.
        rng : int or numpy.random.Generator, optional
            Seed or generator of the test matrix Ω; by default drawn from
            NumPy's global random state.

        Returns
        -------
        U : ndarray, shape (n, k)
        sigma : ndarray, shape (k,)
            Descending, like :func:`numpy.linalg.svd`.
        Vt : ndarray, shape (k, n)

        See Also
        --------
        tfhess_linop.randomized_svd
        """
        if isinstance(Krylov, bool) or not isinstance(Krylov, numbers.Integral) or Krylov < 1:
            raise ValueError(f"`Krylov` must be a positive integer; got {Krylov!r}.")
        n = self.hessian.n
        k = _checks.positive_integer(k, "k", upper=n, upper_text=f"n = {n}")
        p = _checks.nonnegative_integer(p, "p")
        method = "subspace" if Krylov == 1 else "krylov"
        return randomized_svd(
            self.operator,
            k,
            oversample=p,
            n_iter=int(Krylov) - 1,
            method=method,
            rng=_generator(rng),
        )

    def pCG(
        self,
        b,
        k,
        p,
        itmax=1000,
        tol=None,
        KOrd=1,
        mu=None,
        var=None,
        *,
        x0=None,
        rng=None,
        return_info=False,
    ):
        """Solve ``H x = b`` by CG with a rank-`k` Nyström preconditioner. Collective.

        Parameters
        ----------
        b : array_like, shape (n,) or (n, 1)
        k : int
            Rank of the preconditioner.
        p : int
            Oversampling of its sketch.
        itmax : int, optional
            Maximum number of CG iterations.
        tol : float, optional
            Stop when ``‖b - Hx‖ <= tol ‖b‖``; default 1e-8 for a float64
            loss, 1e-5 for lower precision (what its products can reach).
        KOrd : int, optional
            The seed's Krylov order of its preconditioner; the Nyström
            preconditioner needs none, and values other than 1 only warn.
        mu, var : float, optional
            Start from a normal random vector with this mean and standard
            deviation (the seed's start); by default CG starts from zero.
        x0 : array_like, shape (n,) or (n, 1), optional
            Start vector.
        rng : int or numpy.random.Generator, optional
            Seed or generator of the sketch (and of the random start); by
            default drawn from NumPy's global random state.
        return_info : bool, optional
            Also return the `tfhess_linop.SolveResult`.

        Returns
        -------
        x : ndarray, shape of `b`
            The solution, or on negative curvature the last iterate (at the
            first iteration: the preconditioned `b`, a descent direction).
        result : tfhess_linop.SolveResult
            Only with `return_info`; also kept in ``self.last_solve``.
        """
        k, p, itmax, tol = self._iv_pcg(k, p, itmax, tol)
        b_array = np.asarray(b, dtype=np.float64)
        shape = b_array.shape
        b_flat = self._flat_vector(b_array, "b")
        if KOrd != 1:
            warnings.warn(
                "`KOrd` has no effect: the Nyström preconditioner is built from one sketch.",
                UserWarning,
                stacklevel=2,
            )
        generator = _generator(rng)
        if mu is not None or var is not None:
            draw = _mpi.draw(generator, (self.hessian.n,), self.comm)
            x0 = (0.0 if mu is None else mu) + (1.0 if var is None else var) * draw
        elif x0 is not None:
            x0 = self._flat_vector(x0, "x0")
        result = pcg(
            self.operator,
            b_flat,
            rank=min(k, self.hessian.n),
            oversample=p,
            x0=x0,
            rtol=tol,
            maxiter=itmax,
            rng=generator,
        )
        self.last_solve = result
        x = result.x
        curvature = result.negative_curvature
        if curvature is not None:
            if not np.any(x):
                x = curvature.direction
            self._say(
                f"Iteration {curvature.iteration}: negative curvature "
                f"d^T H d / |d|^2 = {curvature.curvature:.6g} <= 0; "
                f"residual {result.residual_norm:.6g}."
            )
        elif result.info:
            self._say(
                f"Max iteration reached ! residual {result.residual_norm:.6g} after "
                f"{result.n_iter} iterations."
            )
        x = x.reshape(shape)
        return (x, result) if return_info else x

    def _iv_pcg(self, k, p, itmax, tol):
        """Check `pCG`'s sizes under the seed's names; no float or string is rounded."""
        k = _checks.positive_integer(k, "k")
        p = _checks.nonnegative_integer(p, "p")
        itmax = _checks.positive_integer(itmax, "itmax")
        if tol is None:
            tol = 1e-8 if self.hessian.dtype == tf.float64 else 1e-5
        return k, p, itmax, _checks.nonnegative_real(tol, "tol")


def _generator(rng):
    """A NumPy generator; by default seeded from NumPy's global state, like the seed.

    The seed drew its random vectors with ``np.random.normal``, so
    ``np.random.seed`` made its results reproducible; so it does here.
    """
    if rng is None:
        return np.random.default_rng(np.random.randint(0, 2**31 - 1))  # noqa: NPY002
    return _checks.generator(rng)
