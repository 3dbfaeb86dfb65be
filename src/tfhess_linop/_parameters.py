"""The flat parameter vector of a `Hessian`: read, assign, evaluate elsewhere.

Kept apart from the operator: these methods only move values between one
flat float64 vector and the variables (collectively under MPI), they never
differentiate anything.
"""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import tensorflow as tf

from . import _mpi

__all__ = ["ParameterVector"]


class ParameterVector:
    """Mixin of `Hessian`: the parameters as one flat vector.

    Expects ``self._engine`` (its ``variables``), ``self._layout``, ``self.n``,
    ``self.comm``, ``self._fixed`` (the current fixed point, or None) and
    ``self._kept`` (the one kept between plain products, or None).
    """

    def _check_same_parameters(self):
        """Refuse ranks whose parameters differ in shapes or values. Collective over `comm`."""
        if _mpi.size(self.comm) == 1:
            return
        shapes = _mpi.allgather_object(self._layout.shapes, self.comm)
        _mpi.agree(
            all(s == shapes[0] for s in shapes),
            "the ranks disagree on the parameters' shapes: "
            + "; ".join(f"rank {r}: {s}" for r, s in enumerate(shapes)),
            self.comm,
        )
        mine = _checksum([v.numpy() for v in self._engine.variables])
        total = _mpi.collective_sum(lambda: mine, mine.shape, self.comm)
        _mpi.agree(
            np.array_equal(total, _mpi.size(self.comm) * mine),
            "the ranks hold different parameter values; every rank must start from the "
            "same weights (set the same seed, or broadcast rank 0's weights).",
            self.comm,
        )

    def parameters(self):
        """The current values of the variables as one flat float64 vector.

        The layout is the one of `flatten`. Reading is local: no
        communication.

        Returns
        -------
        ndarray, shape (n,)
            A new array.

        See Also
        --------
        set_parameters, at

        Examples
        --------
        >>> import tensorflow as tf
        >>> import tfhess_linop as thl
        >>> a = tf.Variable([[1.0, 2.0]], dtype=tf.float64)
        >>> b = tf.Variable(3.0, dtype=tf.float64)
        >>> H = thl.Hessian(lambda: tf.reduce_sum(a**2) * b, [a, b])
        >>> H.parameters()
        array([1., 2., 3.])
        """
        return self._layout.flatten([v.numpy() for v in self._engine.variables])

    def set_parameters(self, w):
        """Assign the flat vector `w` to the variables.

        Collective over `comm`: every rank must pass the same `w` (as every
        rank running the same deterministic optimiser does). A checksum of
        `w` is summed over the ranks, and every rank raises `ValueError`
        when they differ, or when `w` is invalid on any rank. Variables
        that already hold their part of `w` are not assigned again.

        Parameters
        ----------
        w : array_like, shape (n,)
            Real, finite values in the layout of `flatten`; they are cast to
            each variable's dtype (rounded, for a float32 model).

        Raises
        ------
        TypeError
            If `w` is not a real array.
        ValueError
            If `w` has the wrong shape, non-finite entries, entries that
            overflow a variable's dtype, or differs between ranks.

        See Also
        --------
        parameters, at

        Examples
        --------
        >>> import numpy as np, tensorflow as tf
        >>> import tfhess_linop as thl
        >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
        >>> H.set_parameters([1.0, -1.0])
        >>> w.numpy(), H.loss_value()
        (array([ 1., -1.]), -2.0)
        >>> H.set_parameters([1.0, np.nan])
        Traceback (most recent call last):
        ...
        ValueError: `w` must be finite; got nan at index 1 (1 non-finite entries).
        """
        self._assign_parameters(self._agreed_parameters(w))

    @contextlib.contextmanager
    def at(self, w):
        """Evaluate at `w` inside a ``with`` block, then restore the variables.

        Collective over `comm` (as `set_parameters`). On leaving the block,
        normally or by an exception, the variables get back the values they
        had on entering it, bit for bit.

        Parameters
        ----------
        w : array_like, shape (n,)
            As for `set_parameters`.

        Yields
        ------
        Hessian
            This Hessian, now at `w`.

        Examples
        --------
        >>> import numpy as np, tensorflow as tf
        >>> import tfhess_linop as thl
        >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
        >>> with H.at([2.0, 1.0]):
        ...     H.gradient()
        array([24., 48.])
        >>> H.parameters()
        array([1., 1.])
        """
        saved = [v.numpy() for v in self._engine.variables]
        self.set_parameters(w)
        try:
            yield self
        finally:
            self._assign_parameters(saved)

    def _checked_parameters(self, w):
        """`w` as a list of finite arrays in the variables' shapes and dtypes."""
        array = np.asarray(w)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"`w` must be a real array; got dtype {array.dtype}.")
        if array.shape != (self.n,):
            raise ValueError(f"`w` must have shape ({self.n},); got {array.shape}.")
        array = np.asarray(array, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise ValueError(
                f"`w` must be finite; got {array[bad[0]]} at index {bad[0]} "
                f"({bad.size} non-finite entries)."
            )
        pieces = []
        variables = self._engine.variables
        for piece, variable in zip(self._layout.unflatten(array), variables, strict=True):
            with np.errstate(over="ignore"):
                cast = piece.astype(variable.dtype.as_numpy_dtype)
            if not np.isfinite(cast).all():
                raise ValueError(
                    f"`w` has entries that overflow {variable.dtype.name}, the dtype of "
                    f"variable {variable.name}."
                )
            pieces.append(cast)
        return pieces

    def _agreed_parameters(self, w):
        """:meth:`_checked_parameters`, checked to be the same on every rank.

        Collective over `comm`: one sum of a 60-bit checksum of `w` (three
        20-bit pieces and their squares, exact in float64). Every rank holds
        the same piece exactly when the sum of the squares is the number of
        ranks times the square of its own piece, so all ranks reach the same
        verdict.
        """
        if _mpi.size(self.comm) == 1:
            return self._checked_parameters(w)
        checked = []

        def compute():
            checked.extend(self._checked_parameters(w))
            return _checksum(checked)

        total = _mpi.collective_sum(compute, (6,), self.comm)
        if not np.array_equal(total, _mpi.size(self.comm) * _checksum(checked)):
            raise ValueError(
                "`w` differs between the ranks; every rank must pass the same parameters."
            )
        return checked

    def _assign_parameters(self, pieces):
        """Assign variable-shaped arrays, skipping variables that hold them already.

        One compiled call compares and assigns inside the graph: eager
        ``assign`` and ``numpy()`` per variable took 3.3 ms on a
        101,770-parameter MLP, 10-15 % of one of its products.
        """
        assign = getattr(self, "_compiled_assign", None)
        if assign is None:
            variables, layout = list(self._engine.variables), self._layout

            @tf.function(input_signature=[tf.TensorSpec([self.n], tf.float64)])
            def assign(flat):
                changed = [tf.constant(False)]
                for variable, value in zip(variables, layout.split(flat), strict=True):
                    same = tf.reduce_all(tf.equal(variable, value))
                    tf.cond(
                        same,
                        tf.no_op,
                        lambda variable=variable, value=value: variable.assign(value).op,
                    )
                    changed.append(tf.logical_not(same))
                return tf.reduce_any(tf.stack(changed))

            self._compiled_assign = assign = assign.get_concrete_function()
        changed = bool(assign(tf.constant(self._layout.flatten(pieces))))
        if changed:
            # Drop the kept passes now rather than at the next product's check.
            for point in (self._fixed, self._kept):
                if point is not None:
                    point.invalidate()


def _checksum(pieces):
    """Three 20-bit pieces of a hash of `pieces`, and their squares (float64, exact)."""
    digest = hashlib.blake2b(digest_size=8)
    for piece in pieces:
        digest.update(np.ascontiguousarray(piece).tobytes())
    value = int.from_bytes(digest.digest(), "little")
    parts = np.array([(value >> shift) & 0xFFFFF for shift in (0, 20, 40)], dtype=np.float64)
    return np.concatenate([parts, parts**2])
