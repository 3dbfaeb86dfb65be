"""Checks for operators and Hessians, and a dense reference Hessian.

- :func:`dottest`: the adjoint test ``(A u)·v == u·(Aᵀ v)``;
- :func:`symmetry_test`: ``uᵀ (A v) == vᵀ (A u)``;
- :func:`taylor_test`: the order of the second-order Taylor remainder of a
  loss, about 3 when gradient and Hessian are right (the seed's check);
- :func:`dense_hessian_reference`: the dense Hessian by nested
  ``tf.GradientTape`` and ``tape.jacobian``, a route independent of the
  package's Hessian-vector products, for tests and users.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _checks, _mpi

__all__ = [
    "TaylorTestResult",
    "dense_hessian_reference",
    "dottest",
    "symmetry_test",
    "taylor_test",
]


def _iv_operator_test(A, rtol, atol, rng):
    from scipy.sparse.linalg import aslinearoperator

    try:
        A = aslinearoperator(A)
    except TypeError as exc:
        raise TypeError(
            f"`A` must be a LinearOperator, an ndarray or a sparse array, got {type(A).__name__}."
        ) from exc
    rtol = _checks.nonnegative_real(rtol, "rtol")
    atol = _checks.nonnegative_real(atol, "atol")
    return A, rtol, atol, np.random.default_rng(rng)


def _agree(first, second, rtol, atol, what, raiseerror):
    error = abs(first - second)
    passed = bool(error <= max(atol, rtol * max(abs(first), abs(second))))
    if not passed and raiseerror:
        raise AssertionError(
            f"{what} failed: {first!r} != {second!r} "
            f"(difference {error:.3e}, rtol={rtol:g}, atol={atol:g})."
        )
    return passed


def dottest(A, *, rtol=1e-6, atol=0.0, raiseerror=True, rng=None):
    """Check that ``A.rmatvec`` is the adjoint of ``A.matvec``.

    With random u and v, compares :math:`(A u)^T v` with :math:`u^T (A^T v)`,
    like PyLops' ``dottest``. Every operator's first test.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse array, shape (m, n)
        Real operator.
    rtol, atol : float, optional
        Passes when the difference is at most ``max(atol, rtol * max(|a|, |b|))``.
    raiseerror : bool, optional
        Raise `AssertionError` on failure (default) instead of returning False.
    rng : int or numpy.random.Generator, optional
        Seed or generator for u and v (the same on every MPI rank).

    Returns
    -------
    bool
        Whether the test passed.

    Raises
    ------
    AssertionError
        When it failed and `raiseerror` is true.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.sparse.linalg import LinearOperator
    >>> import tfhess_linop as thl
    >>> B = np.arange(6.0).reshape(2, 3)
    >>> thl.dottest(B, rng=0)
    True
    >>> wrong = LinearOperator((2, 3), matvec=lambda x: B @ x, rmatvec=lambda y: 2 * B.T @ y)
    >>> thl.dottest(wrong, raiseerror=False, rng=0)
    False
    """
    A, rtol, atol, rng = _iv_operator_test(A, rtol, atol, rng)
    m, n = A.shape
    comm = _checks.communicator(A)
    u = _mpi.draw(rng, (n,), comm)
    v = _mpi.draw(rng, (m,), comm)
    forward = float(np.asarray(A.matvec(u)).reshape(-1) @ v)
    adjoint = float(u @ np.asarray(A.rmatvec(v)).reshape(-1))
    return _agree(forward, adjoint, rtol, atol, "Dot test", raiseerror)


def symmetry_test(A, *, rtol=1e-6, atol=0.0, raiseerror=True, rng=None):
    """Check that a square operator is symmetric, using ``matvec`` only.

    With random u and v, compares :math:`u^T (A v)` with :math:`v^T (A u)`.
    Unlike :func:`dottest` it does not trust ``rmatvec`` (a Hessian
    operator's ``rmatvec`` is its ``matvec``, so the dot test cannot see an
    asymmetric Hessian-vector product).

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse array, shape (n, n)
    rtol, atol, raiseerror, rng
        As in :func:`dottest`.

    Returns
    -------
    bool

    Raises
    ------
    AssertionError
        When it failed and `raiseerror` is true.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> thl.symmetry_test(np.array([[12.0, 18.0], [18.0, 12.0]]), rng=0)
    True
    >>> thl.symmetry_test(np.array([[1.0, 2.0], [0.0, 1.0]]), raiseerror=False, rng=0)
    False
    """
    A, rtol, atol, rng = _iv_operator_test(A, rtol, atol, rng)
    A, n = _checks.square_operator(A)
    comm = _checks.communicator(A)
    u = _mpi.draw(rng, (n,), comm)
    v = _mpi.draw(rng, (n,), comm)
    products = np.asarray(A.matmat(np.column_stack([u, v])))
    first, second = float(u @ products[:, 1]), float(v @ products[:, 0])
    return _agree(first, second, rtol, atol, "Symmetry test", raiseerror)


class TaylorTestResult(NamedTuple):
    """Outcome of :func:`taylor_test`.

    Attributes
    ----------
    order : float
        Observed order of the remainder (about 3 when gradient and Hessian
        are right, 2 when the Hessian is wrong, 1 when the gradient is);
        NaN when fewer than two steps rise above rounding.
    steps : ndarray, shape (m,)
        The step sizes h.
    errors : ndarray, shape (m,)
        The remainders at those steps.
    """

    order: float
    steps: np.ndarray
    errors: np.ndarray


def _iv_taylor_test(H, direction, point, steps, rng):
    hessian = getattr(H, "hessian", H)
    for attribute in ("value_and_gradient", "loss_value", "hvp", "variables", "flatten"):
        if not hasattr(hessian, attribute):
            raise TypeError(
                f"`H` must be a tfhess_linop.Hessian or HessianOperator, got {type(H).__name__}."
            )
    n = hessian.n
    if direction is None:
        direction = _mpi.draw(np.random.default_rng(rng), (n,), hessian.comm)
        direction /= np.linalg.norm(direction)
    else:
        direction = _checks.vector(direction, n, "direction")
    if point is not None:
        point = _checks.vector(point, n, "point")
    steps = 2.0 ** -np.arange(1, 11) if steps is None else np.asarray(steps, np.float64)
    if steps.ndim != 1 or steps.size < 2 or not np.all(steps > 0):
        raise ValueError(
            f"`steps` must be a 1-D array of at least two positive step sizes, got {steps!r}."
        )
    return hessian, direction, point, steps


def taylor_test(H, direction=None, *, point=None, steps=None, rng=None):
    """Measure the order of the second-order Taylor remainder of a loss.

    For each step h, computes

    .. math::

        e(h) = \\left| L(w + h v) - L(w) - h\\, g^T v
               - \\tfrac12 h^2\\, v^T H v \\right|,

    with the gradient g and the Hessian-vector product Hv from `H`. When
    both are right, :math:`e(h) = O(h^3)`: the observed order (the slope of
    :math:`\\log e` against :math:`\\log h`) is about 3. A wrong Hessian
    gives 2, a wrong gradient 1. This is the seed notebook's check.

    The variables are moved to each point :math:`w + h v` and restored
    (bit for bit) afterwards. Collective over ``H.comm``.

    Parameters
    ----------
    H : Hessian or HessianOperator
    direction : ndarray, shape (n,), optional
        v; by default a random unit vector from `rng`.
    point : ndarray, shape (n,), optional
        w, flat like the Hessian's vectors; by default the variables' values.
    steps : array_like, shape (m,), optional
        Step sizes h, by default :math:`2^{-1}, \\dots, 2^{-10}`.
    rng : int or numpy.random.Generator, optional
        Seed or generator for the default `direction`.

    Returns
    -------
    TaylorTestResult
        ``(order, steps, errors)``. The order is the least-squares slope over
        the (up to four) smallest steps whose remainder is above 64 times
        the rounding level of the loss's dtype.

    Examples
    --------
    The seed's cubic loss :math:`2x^3y^3` at (1, 1):

    >>> import tensorflow as tf
    >>> import tfhess_linop as thl
    >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    >>> H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    >>> result = thl.taylor_test(H, rng=0)
    >>> bool(abs(result.order - 3) < 0.1)
    True
    >>> w.numpy()
    array([1., 1.])
    """
    hessian, direction, point, steps = _iv_taylor_test(H, direction, point, steps, rng)
    variables = hessian.variables
    saved = [variable.numpy() for variable in variables]
    eps = max(np.finfo(variable.dtype.as_numpy_dtype).eps for variable in variables)
    if point is None:
        point = hessian.flatten(saved)
    try:
        _checks.assign_flat(hessian, point)
        value, gradient = hessian.value_and_gradient()
        slope = float(gradient @ direction)
        curvature = float(direction @ hessian.hvp(direction))
        errors, noise = np.empty(steps.size), np.empty(steps.size)
        for i, h in enumerate(steps):
            _checks.assign_flat(hessian, point + h * direction)
            moved = hessian.loss_value()
            model = value + h * slope + 0.5 * h * h * curvature
            errors[i] = abs(moved - model)
            noise[i] = 64 * eps * (abs(moved) + abs(value) + abs(h * slope) + abs(model))
    finally:
        for variable, array in zip(variables, saved, strict=True):
            variable.assign(array)
    return TaylorTestResult(_observed_order(steps, errors, noise), steps, errors)


def _observed_order(steps, errors, noise):
    usable = np.flatnonzero(errors > noise)
    usable = usable[np.argsort(steps[usable])][:4]
    if usable.size < 2:
        return float("nan")
    return float(np.polyfit(np.log(steps[usable]), np.log(errors[usable]), 1)[0])


def dense_hessian_reference(loss, variables):
    """Compute the dense Hessian of a loss by nested gradient tapes.

    The gradient from an inner ``tf.GradientTape``, then its Jacobian from
    an outer one (``tape.jacobian``, one row at a time): a route that shares
    nothing with the package's compiled Hessian-vector products, so tests
    (and users) can check one against the other.

    Not collective: it differentiates this process's `loss` only. Cost:
    n reverse passes; for small models.

    Parameters
    ----------
    loss : callable
        ``loss(variables)`` or ``loss()`` returning a scalar tensor, as for
        :class:`tfhess_linop.Hessian`; run eagerly.
    variables : tf.Variable, keras.Variable, or sequence of them
        All of one floating-point dtype.

    Returns
    -------
    ndarray, shape (n, n), float64
        Rows and columns in the package's flat layout: the variables in
        order, each flattened in C order. Not symmetrised.

    Examples
    --------
    >>> import tensorflow as tf
    >>> from tfhess_linop.testing import dense_hessian_reference
    >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    >>> dense_hessian_reference(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
    array([[12., 18.],
           [18., 12.]])
    """
    import tensorflow as tf

    from .hessian import _loss_caller, _resolve_variables

    given, tf_variables = _resolve_variables(variables)
    call = _loss_caller(loss, given)
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            value = call()
        gradients = inner.gradient(value, tf_variables, unconnected_gradients=zero)
        # The Jacobian's rows are written in the target's dtype, which must
        # be the variables' own: cast to float64 afterwards.
        flat = tf.concat([tf.reshape(g, [-1]) for g in gradients], axis=0)
    rows = outer.jacobian(
        flat, tf_variables, unconnected_gradients=zero, experimental_use_pfor=False
    )
    del outer
    n = int(flat.shape[0])
    return np.concatenate(
        [np.asarray(block, dtype=np.float64).reshape(n, -1) for block in rows], axis=1
    )
