"""A `Hessian`'s loss as a :func:`scipy.optimize.minimize` objective.

:class:`ScipyObjective` gives SciPy's optimisers what they call: the loss
``fun(w)``, its gradient ``jac(w)``, both at once, Hessian-vector products
``hessp(w, p)`` and a Hessian ``hess(w)`` bound to its point, each at any
parameter vector ``w``. :func:`minimize` runs :func:`scipy.optimize.minimize`
on it from the model's current parameters and leaves the model at the
solution.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
from scipy.sparse.linalg import LinearOperator

from . import _mpi
from .hessian import Hessian
from .linop import HessianOperator

__all__ = ["BoundHessian", "ScipyObjective", "minimize"]

# The methods of scipy.optimize.minimize by what they take besides `fun`.
_GRADIENT_METHODS = frozenset(
    {"cg", "bfgs", "newton-cg", "l-bfgs-b", "tnc", "slsqp", "dogleg", "trust-ncg",
     "trust-krylov", "trust-exact", "trust-constr"}
)  # fmt: skip
_HESSP_METHODS = frozenset({"newton-cg", "trust-ncg", "trust-krylov", "trust-constr"})
_DENSE_HESSIAN_METHODS = frozenset({"dogleg", "trust-exact"})


class ScipyObjective:
    r"""The loss of a `Hessian` as a function of its parameters, for SciPy.

    Every method takes the flat parameter vector `w` (the layout of
    `Hessian.flatten`), assigns it to the variables unless they already hold
    it, and evaluates there; the variables stay at the last `w` evaluated.
    The loss and the gradient at one `w` come from one pass and are cached,
    so SciPy's separate calls of `fun` and `jac` at the same point cost one
    pass.

    Collective over ``hessian.comm``: every rank makes the same calls with
    the same `w` (every rank running the same deterministic SciPy
    optimiser does); each call checks that, with a 60-bit checksum of `w`
    summed over the ranks, and raises `ValueError` on every rank otherwise.

    Parameters
    ----------
    hessian : Hessian or HessianOperator

    Attributes
    ----------
    hessian : Hessian
    n : int
        Number of parameters.
    n_evaluations : int
        Loss-and-gradient passes made (cache hits do not count).
    n_hvp : int
        Hessian-vector products made, by `hessp` and by the operators from
        `hess` (``dense_hess`` counts n each).

    See Also
    --------
    minimize : run :func:`scipy.optimize.minimize` on a `Hessian`.

    Notes
    -----
    With a float32 model, `w` is rounded to float32 when assigned, and
    values and gradients are accurate to about 1e-6 relative: tolerances
    such as ``gtol`` must allow for that.

    Examples
    --------
    Least squares :math:`\tfrac12\|Xw - y\|^2` by trust-krylov, against
    :func:`numpy.linalg.lstsq`:

    >>> import numpy as np, scipy.optimize, tensorflow as tf
    >>> import tfhess_linop as thl
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    >>> w = tf.Variable(np.zeros(3))
    >>> H = thl.Hessian(lambda w: 0.5 * tf.reduce_sum((tf.linalg.matvec(X, w) - y) ** 2), w)
    >>> obj = thl.ScipyObjective(H)
    >>> res = scipy.optimize.minimize(
    ...     obj.fun, np.zeros(3), jac=obj.jac, hessp=obj.hessp, method="trust-krylov",
    ...     options={"gtol": 1e-12})
    >>> np.allclose(res.x, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    True
    """

    def __init__(self, hessian):
        if isinstance(hessian, HessianOperator):
            hessian = hessian.hessian
        if not isinstance(hessian, Hessian):
            raise TypeError(
                "`hessian` must be a tfhess_linop.Hessian or HessianOperator; "
                f"got {type(hessian).__name__}."
            )
        self.hessian = hessian
        self.n = hessian.n
        self.n_evaluations = 0
        self.n_hvp = 0
        self._cached_point = None
        self._cached = None

    @property
    def comm(self):
        """The Hessian's communicator, or None."""
        return self.hessian.comm

    def __repr__(self):
        return f"ScipyObjective(n={self.n}, evaluations={self.n_evaluations}, hvp={self.n_hvp})"

    def _move_to(self, w):
        """Assign `w` (validated and agreed over the ranks); return it as float64."""
        pieces = self.hessian._agreed_parameters(w)
        self.hessian._assign_parameters(pieces)
        return np.asarray(w, dtype=np.float64)

    def fun_and_jac(self, w):
        """The loss and its gradient at `w`, from one pass.

        Collective over ``hessian.comm``.

        Parameters
        ----------
        w : array_like, shape (n,)

        Returns
        -------
        value : float
        gradient : ndarray, shape (n,)
            A new array (the cache keeps its own copy).

        Examples
        --------
        >>> import tensorflow as tf
        >>> import tfhess_linop as thl
        >>> v = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> obj = thl.ScipyObjective(thl.Hessian(lambda v: 2 * v[0] ** 3 * v[1] ** 3, v))
        >>> obj.fun_and_jac([1.0, 2.0])
        (16.0, array([48., 24.]))
        >>> obj.fun([1.0, 2.0]), obj.n_evaluations    # from the cache
        (16.0, 1)
        """
        point = self._move_to(w)
        if self._cached_point is None or not np.array_equal(point, self._cached_point):
            self._cached_point = None
            value, gradient = self.hessian.value_and_gradient()
            self.n_evaluations += 1
            self._cached, self._cached_point = (value, gradient), point.copy()
        value, gradient = self._cached
        return value, gradient.copy()

    def fun(self, w):
        """The loss at `w`. Collective over ``hessian.comm``.

        Parameters
        ----------
        w : array_like, shape (n,)

        Returns
        -------
        float
        """
        return self.fun_and_jac(w)[0]

    def jac(self, w):
        """The gradient at `w`. Collective over ``hessian.comm``.

        Parameters
        ----------
        w : array_like, shape (n,)

        Returns
        -------
        ndarray, shape (n,)
        """
        return self.fun_and_jac(w)[1]

    def hessp(self, w, p):
        """The Hessian at `w` times `p`. Collective over ``hessian.comm``.

        Parameters
        ----------
        w : array_like, shape (n,)
        p : array_like, shape (n,)

        Returns
        -------
        ndarray, shape (n,)
        """
        self._move_to(w)
        p = np.asarray(p)
        if p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        result = self.hessian.hvp(p)
        self.n_hvp += 1
        return result

    def hess(self, w):
        """The Hessian at `w`, as a `LinearOperator` bound to `w`.

        The operator assigns `w` (if needed) before every product, so it is
        the Hessian at `w` whatever was evaluated in between, as
        ``minimize(method="trust-constr", hess=obj.hess)`` needs. Making it
        costs nothing; each product checks and assigns `w` and makes one
        Hessian-vector product.

        Collective over ``hessian.comm`` (its products).

        Parameters
        ----------
        w : array_like, shape (n,)
            Copied: changing it afterwards does not move the operator.

        Returns
        -------
        BoundHessian
            A symmetric float64 ``LinearOperator`` of shape (n, n).

        See Also
        --------
        dense_hess : the dense matrix, for "trust-exact" and "dogleg".

        Examples
        --------
        >>> import numpy as np, tensorflow as tf
        >>> import tfhess_linop as thl
        >>> v = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> obj = thl.ScipyObjective(thl.Hessian(lambda v: 2 * v[0] ** 3 * v[1] ** 3, v))
        >>> B = obj.hess([1.0, 1.0])
        >>> obj.fun([2.0, 3.0])    # moves the variables elsewhere
        432.0
        >>> B @ np.array([1.0, 0.0])    # still the Hessian at (1, 1)
        array([12., 18.])
        """
        return BoundHessian(self, w)

    def dense_hess(self, w):
        """The dense Hessian at `w`, for methods that factorise it.

        ``minimize(method="trust-exact")`` and ``"dogleg"`` need
        ``hess(w)`` to return an array; pass ``hess=obj.dense_hess``. It
        costs n Hessian-vector products (batched) each call.

        Collective over ``hessian.comm``.

        Parameters
        ----------
        w : array_like, shape (n,)

        Returns
        -------
        ndarray, shape (n, n)
        """
        self._move_to(w)
        self.n_hvp += self.n
        return self.hessian.dense()


class BoundHessian(LinearOperator):
    """The Hessian at a fixed point `w`, whatever the variables hold.

    Made by :meth:`ScipyObjective.hess`. Each product first assigns `w`
    (skipped when the variables hold it already) and leaves the variables
    at `w`.

    Parameters
    ----------
    objective : ScipyObjective
    w : array_like, shape (n,)

    Attributes
    ----------
    point : ndarray, shape (n,)
        A copy of `w`.
    comm : mpi4py communicator or None
    """

    def __init__(self, objective, w):
        pieces = objective.hessian._checked_parameters(w)
        self.objective = objective
        self.point = objective.hessian.flatten(pieces)
        self.comm = objective.comm
        super().__init__(dtype=np.dtype(np.float64), shape=(objective.n, objective.n))

    def _matvec(self, x):
        x = np.asarray(x)
        if np.iscomplexobj(x):
            return self._matvec(x.real) + 1j * self._matvec(x.imag)
        return self.objective.hessp(self.point, x.reshape(-1))

    def _matmat(self, X):
        X = np.asarray(X)
        if np.iscomplexobj(X):
            return self._matmat(X.real) + 1j * self._matmat(X.imag)
        self.objective._move_to(self.point)
        self.objective.n_hvp += X.shape[1]
        return self.objective.hessian.hvp(X)

    def toarray(self):
        """The dense Hessian at `w` (n Hessian-vector products). Collective."""
        return self.objective.dense_hess(self.point)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"a BoundHessian is not an array: use .toarray() for the dense {self.shape} "
            "matrix. For scipy.optimize.minimize, pass hessp=objective.hessp to "
            "'trust-ncg' and 'trust-krylov', and hess=objective.dense_hess to "
            "'trust-exact' and 'dogleg'."
        )

    def _adjoint(self):
        return self

    _transpose = _adjoint


_OWN_ARGUMENTS = ("fun", "x0", "args", "jac", "hess", "hessp")


def minimize(hessian, method="trust-krylov", *, x0=None, **kwargs):
    """Minimise a `Hessian`'s loss with :func:`scipy.optimize.minimize`.

    Starts from the variables' current values (or `x0`), passes SciPy the
    :class:`ScipyObjective` functions the method takes (`jac` to every
    gradient method, `hessp` to "Newton-CG", "trust-ncg", "trust-krylov"
    and "trust-constr", the dense Hessian to "trust-exact" and "dogleg"),
    and **leaves the variables at** ``res.x``, the best point SciPy
    returns, not at the last point it tried. If SciPy raises, the variables
    get back their values from before the call.

    Collective over ``hessian.comm``: every rank calls it with the same
    arguments and runs the same optimiser, in lockstep.

    Parameters
    ----------
    hessian : Hessian or HessianOperator
    method : str, default: "trust-krylov"
        Any method of :func:`scipy.optimize.minimize`.
    x0 : array_like, shape (n,), optional
        Start point; by default ``hessian.parameters()``.
    **kwargs
        Passed to :func:`scipy.optimize.minimize` (``tol``, ``options``,
        ``callback``, ``bounds``, ``constraints``). Not `fun`, `args`, `jac`,
        `hess` or `hessp`: for other choices, call SciPy with a
        `ScipyObjective` directly.

    Returns
    -------
    scipy.optimize.OptimizeResult
        SciPy's result, with ``n_hvp`` (Hessian-vector products) and
        ``n_evaluations`` (loss-and-gradient passes) added.

    Examples
    --------
    A linear least-squares fit reaches :func:`numpy.linalg.lstsq`:

    >>> import numpy as np, tensorflow as tf
    >>> import tfhess_linop as thl
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    >>> w = tf.Variable(np.zeros(3))
    >>> H = thl.Hessian(lambda w: 0.5 * tf.reduce_sum((tf.linalg.matvec(X, w) - y) ** 2), w)
    >>> res = thl.minimize(H, method="Newton-CG", options={"xtol": 1e-12})
    >>> res.success, np.allclose(w.numpy(), np.linalg.lstsq(X, y, rcond=None)[0])
    (True, True)
    >>> np.array_equal(w.numpy(), res.x)    # the model is left at res.x
    True
    """
    objective = ScipyObjective(hessian)
    hessian = objective.hessian
    given = [name for name in _OWN_ARGUMENTS[1:] if name in kwargs]
    if given:
        raise TypeError(
            f"`{given[0]}` is set by tfhess_linop.minimize; pass a ScipyObjective's "
            "functions to scipy.optimize.minimize directly to choose it."
        )
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string; got {type(method).__name__}.")
    start = hessian.parameters() if x0 is None else x0
    with _mpi.collective_call(
        hessian.comm if _mpi.size(hessian.comm) > 1 else None,
        "minimize",
        method=method,
        x0=start,
        **kwargs,
    ):
        start = hessian.flatten(hessian._agreed_parameters(start))
        saved = [v.numpy() for v in hessian.variables]
        chosen = method.lower()
        functions = {}
        if chosen in _GRADIENT_METHODS:
            functions["jac"] = objective.jac
        if chosen in _HESSP_METHODS:
            functions["hessp"] = objective.hessp
        elif chosen in _DENSE_HESSIAN_METHODS:
            functions["hess"] = objective.dense_hess
        try:
            # hessp is called several times at each point (trust-krylov,
            # trust-ncg, Newton-CG): the fixed point pays the primal passes
            # once per point and restarts when the point moves.
            with hessian.fixed_point():
                result = scipy.optimize.minimize(
                    objective.fun, start, method=method, **functions, **kwargs
                )
            hessian.set_parameters(result.x)
        except BaseException:
            hessian._assign_parameters(saved)
            raise
        result.n_hvp = objective.n_hvp
        result.n_evaluations = objective.n_evaluations
        return result
