"""`HessianOperator`: a `Hessian` as a `scipy.sparse.linalg.LinearOperator`."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .curvature import CurvatureOperator
from .hessian import Hessian

__all__ = ["HessianOperator", "as_linop"]


class HessianOperator(LinearOperator):
    r"""The Hessian as a symmetric float64 `~scipy.sparse.linalg.LinearOperator`.

    Every SciPy matrix-free routine (``eigsh``, ``lobpcg``, ``svds``, ``cg``,
    ``minres``, ...) works on it unchanged. ``matmat`` computes all columns
    in one vectorised call, and the adjoint is the operator itself.

    Parameters
    ----------
    hessian : Hessian or CurvatureOperator
        A Hessian, or a `GGN`, `Fisher` or `EmpiricalFisher`.

    Attributes
    ----------
    hessian : Hessian
    comm : mpi4py communicator or None
        The Hessian's communicator: with one, every product is collective.
    n_hvp : int
        Number of Hessian-vector products computed so far (a ``matmat`` of k
        columns counts k). Reset it by assigning 0.

    Notes
    -----
    The dtype is passed to `LinearOperator` explicitly: without it SciPy
    would infer it by applying the operator to a test vector, which is a
    full data pass (and a collective under MPI).

    Complex inputs are applied to their real and imaginary parts.

    Examples
    --------
    >>> import tensorflow as tf
    >>> from scipy.sparse.linalg import eigsh
    >>> import tfhess_linop as thl
    >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
    >>> A = thl.as_linop(thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w))
    >>> A
    <2x2 HessianOperator with dtype=float64>
    >>> A @ [1.0, 1.0]
    array([30., 30.])
    >>> eigsh(A, k=1, which="SA", return_eigenvectors=False)
    array([-6.])
    """

    def __init__(self, hessian):
        if not isinstance(hessian, (Hessian, CurvatureOperator)):
            raise TypeError(
                "`hessian` must be a tfhess_linop.Hessian, GGN, Fisher or EmpiricalFisher; "
                f"got {type(hessian).__name__}."
            )
        self.hessian = hessian
        self.comm = hessian.comm
        self.n_hvp = 0
        super().__init__(dtype=np.dtype(np.float64), shape=(hessian.n, hessian.n))

    def _matmat(self, X):
        X = np.asarray(X)
        if np.iscomplexobj(X):
            both = self._matmat(np.hstack([X.real, X.imag]))
            k = X.shape[1]
            return both[:, :k] + 1j * both[:, k:]
        self.n_hvp += X.shape[1]
        return self.hessian.hvp(X)

    def _matmat_into(self, X, out):
        """``A @ X`` written into `out` (float64, X's shape; may be X itself).

        For the package's algorithms, which reuse their blocks: a Hessian's
        products at a fixed point are written into `out` directly.
        """
        self.n_hvp += X.shape[1]
        if isinstance(self.hessian, Hessian):
            return self.hessian.hvp(X, out=out)
        np.copyto(out, self.hessian.hvp(X))
        return out

    def _matvec(self, x):
        x = np.asarray(x)
        if np.iscomplexobj(x):
            return self._matvec(x.real) + 1j * self._matvec(x.imag)
        self.n_hvp += 1
        return self.hessian.hvp(x.reshape(-1))

    def toarray(self, block_size=None, progress=False):
        """The dense (n, n) Hessian, as `Hessian.dense` (with its memory bounds).

        Collective over `comm`. Costs n Hessian-vector products, counted in
        `n_hvp`.

        Parameters
        ----------
        block_size : int, optional
            Columns per batched product (default: ``hessian.max_columns``).
        progress : bool, default: False
            Show a progress bar (on rank 0).

        Returns
        -------
        ndarray, shape (n, n)

        Examples
        --------
        >>> import numpy as np, tensorflow as tf
        >>> import tfhess_linop as thl
        >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> A = thl.as_linop(thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w))
        >>> A.toarray()
        array([[12., 18.],
               [18., 12.]])
        >>> np.asarray(A)
        Traceback (most recent call last):
        ...
        TypeError: a HessianOperator is not an array: use A.toarray() for the dense (2, 2) matrix.
        """
        dense = self.hessian.dense(block_size=block_size, progress=progress)
        self.n_hvp += self.shape[1]
        return dense

    def __array__(self, dtype=None, copy=None):
        # Without it NumPy wraps the operator in a 0-d object array, silently.
        raise TypeError(
            f"a HessianOperator is not an array: use A.toarray() for the dense {self.shape} matrix."
        )

    def _rmatvec(self, x):
        return self._matvec(x)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self

    _transpose = _adjoint


def as_linop(hessian):
    """Wrap a `Hessian` as a `HessianOperator` (a SciPy ``LinearOperator``).

    Parameters
    ----------
    hessian : Hessian, CurvatureOperator or HessianOperator
        A `HessianOperator` is returned as it is; a `GGN`, `Fisher` or
        `EmpiricalFisher` is wrapped as a Hessian is.

    Returns
    -------
    HessianOperator
    """
    if isinstance(hessian, HessianOperator):
        return hessian
    return HessianOperator(hessian)
