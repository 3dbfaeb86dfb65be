"""The seed's ``numsa.TFHessian`` interface, on top of `tfhess_linop`.

A notebook written for ``numsa.TFHessian`` runs with one changed line::

    from tfhess_linop.compat.numsa import *

The star import provides `Hessian` and, as the seed's module did, ``la``
(:mod:`numpy.linalg`), which the seed's notebook uses without importing it.
Every method is a thin layer over :class:`tfhess_linop.Hessian` and the
solvers of :mod:`tfhess_linop`: products are compiled, exact and, under MPI,
the same on every rank.

Behaviour changes
-----------------
Where the seed was wrong, this module is right; code that relied on the seed's
output may see these differences:

- Keras 3 works (the seed's ``ForwardAccumulator`` rejected
  ``keras.Variable``), and every product is one compiled Hessian-vector
  product, not one eager pass per weight tensor.
- ``action(v, True)`` returns ``(gradient, Hv)`` in every case; the seed's
  MPI branch returned ``(Hv, gradient)``. Both come back in the variables'
  shapes and dtype, as ``tf.Tensor``.
- Under MPI the gradient is summed over ranks like the Hessian (the seed
  left it local, so ranks drifted apart). ``Loss(weights, comm)`` must
  return this rank's *contribution*: with the mean over all N samples,
  ``sum(local losses) / N``. The seed's example parallel loss split the
  inputs over ranks but not the labels, and returned each rank's local mean,
  so the sum over ranks was not the loss of the full data.
- ``eig("pi-max")`` runs power iteration to a residual tolerance (the seed
  made 10 fixed steps from the point ``x0`` itself, which fails when ``x0``
  is zero) and returns the largest *algebraic* eigenvalue; the seed returned
  the eigenvalue of largest magnitude, which differs when the most negative
  eigenvalue dominates. ``eig("pi-min")`` (new) returns the smallest.
  Unknown flags raise ``ValueError`` (the seed returned None).
- ``mat()`` and ``matrix()`` return the exact symmetric float64 Hessian for
  any loss, with or without the ``"KERAS"`` flag (the seed's ``mat`` left
  the matrix zero without the flag and returned float32; its MPI assembly
  summed partial matrices wrongly).
- ``RandMatSVD(k, p, Krylov=q)`` really uses the block Krylov space
  ``[H Ω, ..., H^q Ω]`` (the seed built it and then used only its first
  block, and its ``U`` lacked the basis factor for ``q > 1``), does not crash
  when ``q (k + p) > n``, and returns the `k` leading triplets (the seed
  returned ``k + p``, the last `p` of them inaccurate).
- ``pCG`` starts from zero (the seed: a random vector), is preconditioned
  by a randomized Nyström approximation, which is positive definite (the
  seed inverted a randomized SVD, which can be singular or indefinite), and
  measures ``tol`` relative to ``‖b‖``. On negative curvature it returns the
  last iterate, or at the first iteration the preconditioned right-hand side
  (a descent direction, as in Steihaug's truncated Newton method; the seed
  returned its random start), and records the direction and its curvature in
  ``H.last_solve.negative_curvature``.
- Building ``Hessian(Loss, weights)`` again with the same ``Loss`` function
  and the same variables reuses the compiled functions, so constructing it in
  a training loop is cheap. The loss is traced once: NumPy data it reads from
  globals is captured at the first trace. To change the data, define a new
  loss function (or use :meth:`tfhess_linop.Hessian.from_keras`).

This module holds the class, its construction and its evaluations (products,
gradient, dense matrix); the seed's algorithms (``eig``, ``RandMatSVD``,
``pCG``) are in ``_numsa_algorithms``, and the detection of the loss's form
with the cache of compiled Hessians in ``_numsa_compiled``.
"""

from __future__ import annotations

import numpy as np
import numpy.linalg as la
import tensorflow as tf
from tqdm.auto import tqdm

from .. import _mpi
from ..linop import as_linop
from ._numsa_algorithms import NumsaAlgorithms
from ._numsa_compiled import compiled_hessian, takes_comm

__all__ = ["Hessian", "la"]

_FLAGS = ("None", "KERAS")


class Hessian(NumsaAlgorithms):
    """The Hessian of a TensorFlow loss, with the seed's ``numsa`` interface.

    Parameters
    ----------
    Loss : callable
        ``Loss(x0)``, ``Loss(weights, comm)`` or ``Loss()``, returning a scalar
        tensor; it must be traceable by ``tf.function``. A loss that takes a
        communicator receives `comm` and must return this rank's contribution
        (the Hessian is that of the sum of the contributions over ranks).
    x0 : tf.Variable, keras.Variable or list of them
        Where the Hessian is evaluated: a variable, or a Keras model's
        ``trainable_weights``. The Hessian follows their current values.
    flag : {"None", "KERAS"}, optional
        The seed's flag for lists of Keras weights; vectors in the shapes of
        the variables are lists exactly when `x0` is a list, whatever the
        flag.
    comm : mpi4py communicator, optional
        Only used when `Loss` takes a communicator; default
        ``MPI.COMM_WORLD`` (as in the seed). Every method is then collective
        over `comm`.

    Attributes
    ----------
    hessian : tfhess_linop.Hessian
        The underlying Hessian.
    verbose : bool
        Print messages and progress bars (see `SwitchVerbose`).
    last_solve : tfhess_linop.SolveResult or None
        The result of the last `pCG`: iterations, products, negative
        curvature.

    See Also
    --------
    tfhess_linop.Hessian : the interface this one is built on.

    Examples
    --------
    The seed's cubic loss :math:`2x^3y^3` has the Hessian
    ``[[12, 18], [18, 12]]`` at (1, 1), with eigenvalues 30 and -6:

    >>> import tensorflow as tf
    >>> from tfhess_linop.compat.numsa import Hessian
    >>> def Loss(X):
    ...     return 2 * X[0] ** 3 * X[1] ** 3
    >>> H = Hessian(Loss, tf.Variable([1.0, 1.0]))
    >>> grad, Hv = H.action(tf.Variable([1.0, 0.0]), True)
    >>> grad.numpy(), Hv.numpy()
    (array([6., 6.], dtype=float32), array([12., 18.], dtype=float32))
    >>> round(float(H.eig("pi-max")), 4), round(float(H.eig("pi-min")), 4)
    (30.0, -6.0)
    >>> H.mat()
    array([[12., 18.],
           [18., 12.]])
    """

    def __init__(self, Loss, x0, flag="None", *, comm=None):
        if flag is None:
            flag = "None"
        if flag not in _FLAGS:
            raise ValueError(f"`flag` must be 'None' or 'KERAS'; got {flag!r}.")
        self.flag = flag
        self.LossFunction = Loss
        self.x0 = x0
        self._structured = isinstance(x0, (list, tuple))
        loss_takes_comm = takes_comm(Loss)
        if loss_takes_comm and comm is None:
            try:
                comm = _mpi.world()
            except ImportError:
                raise ImportError(
                    "`Loss` takes a communicator, `Loss(weights, comm)`, which needs mpi4py; "
                    "install it (`pip install 'tfhess-linop[mpi]'`) or pass `comm=`."
                ) from None
        self.comm = _mpi.resolve_comm(comm) if loss_takes_comm else None
        self.hessian = compiled_hessian(Loss, x0, self.comm, loss_takes_comm)
        self.operator = as_linop(self.hessian)
        self.last_solve = None
        self.SwitchVerbose(False)

    # ---------------------------------------------------------------- options

    def SwitchVerbose(self, state=None):
        """Turn messages and progress bars on or off.

        Parameters
        ----------
        state : bool, optional
            The new setting; without it, the setting is toggled (the seed's
            first version took no argument). Only booleans are accepted: a
            string such as ``"no"`` is truthy and would turn output on.
        """
        if state is not None and not isinstance(state, (bool, np.bool_)):
            raise TypeError(f"`state` must be True, False or None, got {state!r}.")
        self.verbose = (not self.verbose) if state is None else bool(state)

    # ------------------------------------------------------------ evaluations

    def grad(self):
        """The gradient of the loss, in the variables' shapes. Collective.

        Returns
        -------
        tf.Tensor or list of tf.Tensor
        """
        return self._structure(self.hessian.gradient())

    def action(self, v, grad=False):
        """The Hessian times `v`, and optionally the gradient. Collective.

        Parameters
        ----------
        v : tensor, array or list of them
            A direction in the variables' shapes (a list for a list of
            variables), or a flat vector of length n.
        grad : bool, optional
            Also return the gradient.

        Returns
        -------
        Hv : tf.Tensor or list of tf.Tensor
            In the variables' shapes and dtype. With `grad`, the pair
            ``(gradient, Hv)``.
        """
        gradient, hv = self.hessian.action(self._flat(v, "v"))
        if grad:
            return self._structure(gradient), self._structure(hv)
        return self._structure(hv)

    def vecprod(self, w):
        """The Hessian times a flat vector. Collective.

        Parameters
        ----------
        w : array_like, shape (n,) or (n, 1)

        Returns
        -------
        ndarray, shape (n,), float64
        """
        return self.hessian.hvp(self._flat_vector(w, "w"))

    def vec(self, layerGrad):
        """Flatten a list of variable-shaped tensors into one vector.

        Parameters
        ----------
        layerGrad : tensor or list of tensors
            In the variables' shapes (e.g. ``tape.gradient(loss, weights)``).

        Returns
        -------
        ndarray, shape (n,), float64
        """
        if not self._structured:
            layerGrad = [layerGrad]
        return self.hessian.flatten(layerGrad)

    def mat(self, weights=None, grad=False):
        """The dense Hessian. Collective.

        Parameters
        ----------
        weights : list of variables, optional
            Accepted for the seed's older ``mat(model_weights, grad=...)``;
            it must be the variables of this Hessian.
        grad : bool, optional
            Also return the gradient.

        Returns
        -------
        fullH : ndarray, shape (n, n), float64
            Symmetric.
        grad : ndarray, shape (n,)
            Only with `grad`.
        """
        self._check_weights(weights)
        self._say(f"MPI the world is {_mpi.size(self.comm)} process big !")
        dense = self.hessian.dense()
        return (dense, self.hessian.gradient()) if grad else dense

    def matrix(self, flag=None, grad=False):
        """The dense Hessian, one progress bar per variable when verbose. Collective.

        Parameters
        ----------
        flag : {"None", "KERAS"}, optional
            Accepted for the seed's ``matrix("KERAS")``; it does not change
            the result.
        grad : bool, optional
            Also return the gradient.

        Returns
        -------
        fullH : ndarray, shape (n, n), float64
        grad : ndarray, shape (n,)
            Only with `grad`.
        """
        if flag is not None and flag not in _FLAGS:
            raise ValueError(f"`flag` must be 'None' or 'KERAS'; got {flag!r}.")
        self._say(f"MPI the world is {_mpi.size(self.comm)} process big !")
        n = self.hessian.n
        sizes = [int(np.prod(v.shape, dtype=np.int64)) for v in self.hessian.variables]
        dense = np.empty((n, n))
        show = self.verbose and _mpi.rank(self.comm) == 0
        start = 0
        for size in sizes:
            with tqdm(total=size, disable=not show) as bar:
                for first in range(start, start + size, 64):
                    last = min(first + 64, start + size)
                    block = np.zeros((n, last - first))
                    block[np.arange(first, last), np.arange(last - first)] = 1.0
                    dense[:, first:last] = self.hessian.hvp(block)
                    bar.update(last - first)
            start += size
        dense = 0.5 * (dense + dense.T)
        return (dense, self.hessian.gradient()) if grad else dense

    # --------------------------------------------------------------- helpers
    def _say(self, message):
        if self.verbose and _mpi.rank(self.comm) == 0:
            print(message)

    def _check_weights(self, weights):
        if weights is None:
            return
        given = list(weights) if isinstance(weights, (list, tuple)) else [weights]
        expected = self.hessian.variables
        shapes = [tuple(w.shape) for w in given]
        if shapes != [tuple(v.shape) for v in expected]:
            raise ValueError(
                "`weights` must be the variables of this Hessian, of shapes "
                f"{[tuple(v.shape) for v in expected]}; got shapes {shapes}."
            )

    def _flat_vector(self, w, name):
        array = np.asarray(w, dtype=np.float64)
        n = self.hessian.n
        if array.size != n or array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
            raise ValueError(f"`{name}` must have shape ({n},) or ({n}, 1); got {array.shape}.")
        return array.reshape(n)

    def _flat(self, v, name):
        if isinstance(v, (list, tuple)):
            return self.hessian.flatten(v)
        return self._flat_vector(v, name)

    def _structure(self, flat):
        dtype = self.hessian.dtype
        pieces = [tf.constant(a, dtype=dtype) for a in self.hessian.unflatten(flat)]
        return pieces if self._structured else pieces[0]
