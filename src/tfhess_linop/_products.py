"""The products of a `Hessian`: values, gradients, Hessian-vector products, dense matrix.

Every public evaluation of the operator is here, with the fixed point that
keeps the primal passes across products; the sums over batches and ranks
they all go through are in `_batch_sums`.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
from tqdm.auto import tqdm

from . import _fixed_point, _mpi
from ._split_product import SplitProduct

__all__ = ["HessianProducts"]


class HessianProducts:
    """Mixin of `Hessian`: what the operator computes.

    Expects ``self._engine`` (its compiled functions and ``variables``),
    ``self._batches``, ``self._fixed``, ``self._kept``, ``self.n``, ``self.mode``,
    ``self._jit_compile``, ``self.max_columns``, ``self.comm`` and the
    batch sums of `BatchSums` (``self._sum``).
    """

    # ----------------------------------------------------------- evaluations

    def loss_value(self) -> float:
        """The loss at the current variables. Collective over `comm`."""
        return float(self._sum(self._engine.loss, ())[()])

    def value_and_gradient(self):
        """The loss and its gradient from one pass. Collective over `comm`.

        Returns
        -------
        value : float
        gradient : ndarray, shape (n,)
        """
        out = self._sum(self._engine.value_and_gradient, (self.n + 1,))
        return float(out[0]), out[1:]

    def gradient(self):
        """The gradient at the current variables. Collective over `comm`.

        Returns
        -------
        ndarray, shape (n,)
        """
        return self.value_and_gradient()[1]

    def hvp(self, v, *, out=None):
        """Hessian-vector product(s). Collective over `comm`.

        The first product at a point computes the forward and backward passes
        and keeps what the last pass reads; later products at the same point
        are that pass alone (`keep_passes`, on by default), until any
        variable the loss reads changes.

        Parameters
        ----------
        v : array_like, shape (n,) or (n, k)
            One vector, or k vectors as columns, computed by vectorised calls
            of at most `max_columns` columns each (a vectorised HVP holds
            one copy of the model's activations per column).
        out : ndarray, optional
            A writable float64 array of `v`'s shape (any layout) to write the
            result into, as NumPy's ``out``; it may be `v` itself. Inside
            `fixed_point` the products are written into it directly: a fresh
            result of a large block costs page faults (0.05 s for the
            (1.07M, 33) float64 block of a 1.07M-parameter MLP on a 2-core
            CPU, 0.5 s in a virtual machine that returns freed memory to its
            host), an array that is written again and again does not.
            Without `out`, products through kept passes (`keep_passes`,
            `fixed_point`) write a result of 32 MiB or more into the last
            such result once the caller has dropped it and every view of
            it: at most one is held, until the passes are released.

        Returns
        -------
        ndarray, float64, same shape as `v`
            `out`, when given.
        """
        v = self._check_vectors(v, "v")
        _check_out(out, v.shape)
        point = self._fixed if self._fixed is not None else self._kept_point()
        if point is not None:
            matrix = v if v.ndim == 2 else v[:, None]
            into = None if out is None else (out if out.ndim == 2 else out[:, None])
            result = self._fixed_point_sum(point, matrix, into)
            if result is not None:
                return _written(result if v.ndim == 2 else result[:, 0], out)
        return _written(self._plain_hvp(v), out)

    @property
    def keep_passes(self):
        """Whether products outside `fixed_point` keep the primal passes of their point.

        True by default: a product computes the forward and backward passes
        of its point once and keeps what the last backward pass reads, and
        the next products at the same point (a run of `hvp` or ``matvec``
        calls, SciPy's own algorithms on `as_linop`) are the second pass
        alone, as inside `fixed_point`. Each product checks in its graph that
        no variable the loss reads has moved; after any change the passes
        are recomputed. A change made by `set_parameters` is known at once;
        any other (an optimizer step, an ``assign``) is found by one extra
        graph call that computes nothing (0.4 ms, about 0.15 gradient on a
        784-128-10 MLP). Where the parameters move before every single
        product (a training loop with one product per step), that call is
        skipped after two such points in a row, and made for one product in
        four, to see when points last again. The kept
        intermediates are bounded by a quarter of `fixed_point`'s default
        budget (at most 1 GiB): over it, or where the product cannot be
        cut, products are computed from scratch, without a warning. Set it
        to False to drop them and always compute from scratch (under MPI, on
        every rank alike: the route is chosen collectively).
        """
        return self._keep_passes

    @keep_passes.setter
    def keep_passes(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"`keep_passes` must be True or False; got {value!r}.")
        self._keep_passes = bool(value)
        if not value:
            self._release_kept()

    def _kept_point(self):
        """The fixed point kept between plain products, or None (`keep_passes` off)."""
        if not self._keep_passes:
            return None
        if self._kept is None:
            budget = _fixed_point.kept_memory_budget()
            self._kept = self._new_point(budget, quiet=True)
        return self._kept

    def _release_kept(self):
        """Drop the passes kept between plain products (their route stays decided)."""
        if self._kept is not None:
            self._kept.close()

    def _plain_hvp(self, v):
        """``H @ v`` outside a fixed point (or where it is not taken)."""
        if v.ndim == 1:
            return self._sum(self._engine.hvp, (self.n,), v)
        if v.shape[1] == 1:
            return self._sum(self._engine.hvp, (self.n,), v[:, 0])[:, None]
        if v.shape[1] <= self.max_columns:
            return self._block_sum(v)
        result = np.empty_like(v)
        for start in range(0, v.shape[1], self.max_columns):
            block = v[:, start : start + self.max_columns]
            result[:, start : start + block.shape[1]] = self._block_sum(block)
        return result

    def _block_sum(self, v):
        """``H @ v`` for an (n, k) block of at most `max_columns` columns (no fixed point)."""
        engine = self._engine
        if engine.block_rows:
            # Rows in the variables' dtype, cast in the staging copy: no
            # transposes or casts in the graph (see Engine.fixed_point_pass).
            dtype = engine.layout.working_dtype.as_numpy_dtype
            return self._sum(engine.hvp_block, v.shape, v, dtype=dtype, rows=True)
        return self._sum(engine.hvp_block, v.shape, v)

    @contextlib.contextmanager
    def fixed_point(self, *, memory_budget=None):
        """Products at fixed parameters inside a ``with`` block: the primal passes paid once.

        Inside the block, `hvp` (and so the operator of `as_linop`) computes
        the forward and backward passes once per point and each product by
        one more backward pass alone: 1.1-1.3x a gradient per product on a
        784-128-10 MLP (the pass itself 1.0-1.1x), against 1.5-1.7x from
        scratch. The package's own algorithms (`eigsh`, `lobpcg`, the
        solvers, the estimators, `NewtonCG`'s inner solves) enter it by
        themselves. Outside any block, products keep the passes of their
        point too (`keep_passes`), within a smaller budget and without
        warnings; a block is the way to choose the budget and to see the
        route taken. Collective over `comm` like `hvp`.

        The results are those of `hvp` outside the block, to round-off.
        Every product checks, inside the graph, that every variable the loss
        reads (the parameters, BatchNorm's moving statistics, a frozen
        layer's weights) still holds the value the passes read, bit for bit;
        after any change (`set_parameters`, an optimizer step, a plain
        ``assign``) the passes are recomputed at the new point, so the block
        never returns a stale product.

        Parameters
        ----------
        memory_budget : int, optional
            Most bytes the kept intermediates (of all local batches) may
            take, from their traced shapes (the accumulators of a ``while``
            loop, as of a recurrent layer, have no static size and are not
            counted). Default: an eighth of the
            machine's memory, at most 4 GiB. Over it, a `PerformanceWarning`
            is issued and products are computed as outside the block.

        Yields
        ------
        FixedPoint
            ``active`` (None before the first product, then whether the
            kept passes are used), ``reason`` (why not), ``starts`` (how
            often the passes were computed) and ``estimated_bytes``.

        Notes
        -----
        Not taken with ``mode="forward-over-reverse"`` or ``jit_compile=True``
        (the kept passes are reverse-mode, and run as plain graphs). Each
        local data batch keeps its own intermediates until the block ends
        or the parameters move. Nested blocks share the outer one. Entering
        a block drops the passes kept between plain products.

        Examples
        --------
        >>> import numpy as np, tensorflow as tf
        >>> import tfhess_linop as thl
        >>> w = tf.Variable([1.0, 1.0], dtype=tf.float64)
        >>> H = thl.Hessian(lambda w: 2 * w[0] ** 3 * w[1] ** 3, w)
        >>> with H.fixed_point() as point:
        ...     first = H.hvp(np.array([1.0, 0.0]))
        ...     H.set_parameters([2.0, 1.0])
        ...     second = H.hvp(np.array([1.0, 0.0]))
        >>> first, second
        (array([12., 18.]), array([24., 72.]))
        >>> point.starts  # the passes were computed at two points
        2
        """
        if self._fixed is not None:
            yield self._fixed
            return
        if memory_budget is None:
            memory_budget = _fixed_point.default_memory_budget()
        point = self._new_point(memory_budget)
        # The block's passes replace those kept between plain products.
        self._release_kept()
        self._fixed = point
        try:
            yield point
        finally:
            self._fixed = None
            point.close()

    def _new_point(self, memory_budget, quiet=False):
        point = _fixed_point.FixedPoint(
            self._split_product, lambda: self._batches, memory_budget=memory_budget, quiet=quiet
        )
        if self.mode == "forward-over-reverse" or self._jit_compile:
            point.active = False
            point.reason = f"not taken with mode={self.mode!r}, jit_compile={self._jit_compile}"
        return point

    def _split_product(self):
        """The product cut into primal passes and second pass, made once.

        Called inside the first product's collective sum: tracing the
        product runs the loss, which may fail on one rank only.
        """
        if self._split is None:
            self._split = SplitProduct(self._engine)
        return self._split

    def _fixed_point_sum(self, point, matrix, out=None):
        """``H @ matrix`` through the kept passes of `point`, or None if not taken.

        With `out` ((n, k) float64), this rank's products are written into it
        when it is the only rank (with several, the sum's own buffer is).
        """
        if point.active is None:
            # All ranks take the same route: the fixed point only if it fits
            # the budget on every rank (collective, once per block).
            over = _mpi.collective_sum(
                lambda: np.array([0.0 if point.fits() else 1.0]), (1,), self.comm
            )
            point.active = bool(over[0] == 0)
            if not point.active and not point.reason:
                point.reason = "another rank's intermediates are over its memory budget."
        if not point.active:
            return None
        alone = self.comm is None or self.comm.Get_size() == 1

        def compute():
            # Raises on a NaN or inf in `matrix` before any product.
            return point.product(matrix, out=out if alone else None)

        return _mpi.collective_sum(compute, matrix.shape, self.comm)

    def action(self, v):
        """The gradient and the Hessian-vector product from one pass.

        Collective over `comm`.

        Parameters
        ----------
        v : array_like, shape (n,)

        Returns
        -------
        gradient : ndarray, shape (n,)
        hv : ndarray, shape (n,)
        """
        v = self._check_vectors(v, "v", allow_matrix=False)
        out = self._sum(self._engine.action, (2 * self.n,), v)
        return out[: self.n], out[self.n :]

    def dense(self, block_size=None, progress=False):
        """The dense (n, n) Hessian, assembled from batched HVPs of identity blocks.

        Collective over `comm`. Memory beyond the result is bounded by the
        block: an (n, block_size) identity block and one vectorised HVP of
        that many columns.

        Parameters
        ----------
        block_size : int, optional
            Columns per batched HVP (default: `max_columns`).
        progress : bool, default: False
            Show a progress bar (on rank 0).

        Returns
        -------
        ndarray, shape (n, n)
            Symmetric (the average of the assembled matrix and its transpose).
        """
        n = self.n
        if block_size is None:
            block_size = max(1, min(n, self.max_columns))
        elif (
            isinstance(block_size, bool)
            or not isinstance(block_size, (int, np.integer))
            or block_size <= 0
        ):
            raise ValueError(
                f"`block_size` must be a positive integer or None; got {block_size!r}."
            )
        gib = n * n * 8 / 2**30
        if gib > 1:
            warnings.warn(
                f"dense() allocates an ({n}, {n}) float64 array: {gib:.1f} GiB.",
                UserWarning,
                stacklevel=2,
            )
        result = np.empty((n, n))
        bar = tqdm(
            total=n,
            desc="dense Hessian",
            unit="col",
            disable=not progress or _mpi.rank(self.comm) != 0,
        )
        with bar:
            for start in range(0, n, block_size):
                stop = min(start + block_size, n)
                block = np.zeros((n, stop - start))
                block[np.arange(start, stop), np.arange(stop - start)] = 1.0
                result[:, start:stop] = self.hvp(block)
                bar.update(stop - start)
        _symmetrize(result, block_size)
        return result

    # --------------------------------------------------------------- helpers

    def _check_vectors(self, v, name, allow_matrix=True):
        array = np.asarray(v)
        if array.dtype.kind not in "fiub":
            raise TypeError(f"`{name}` must be a real array; got dtype {array.dtype}.")
        shapes = f"({self.n},) or ({self.n}, k)" if allow_matrix else f"({self.n},)"
        if array.ndim not in ((1, 2) if allow_matrix else (1,)) or array.shape[0] != self.n:
            raise ValueError(f"`{name}` must have shape {shapes}; got {array.shape}.")
        # Any layout: the products copy it in once, as they need it.
        return np.asarray(array, dtype=np.float64)


def _check_out(out, shape):
    """Raise early unless `out` is None or a writable float64 array of `shape`."""
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.dtype != np.float64:
        kind = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(f"`out` must be a float64 NumPy array; got {kind}.")
    if out.shape != shape:
        raise ValueError(f"`out` must have the shape of `v`, {shape}; got {out.shape}.")
    if not out.flags.writeable:
        raise ValueError("`out` is read-only.")


def _written(result, out):
    """`result`, or `out` holding it (no copy when the products wrote into `out`)."""
    if out is None:
        return result
    # A view of `out` (the products wrote into it) or a fresh array.
    if not np.may_share_memory(result, out):
        np.copyto(out, result)
    return out


def _symmetrize(matrix, block_size):
    """Replace `matrix` by (matrix + matrix.T) / 2 in place, one block row at a time.

    Round-off makes the assembled columns slightly asymmetric; averaging in
    blocks avoids the n-by-n temporary of ``matrix + matrix.T``.
    """
    n = matrix.shape[0]
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        average = 0.5 * (matrix[start:stop, start:] + matrix[start:, start:stop].T)
        matrix[start:stop, start:] = average
        matrix[start:, start:stop] = average.T
