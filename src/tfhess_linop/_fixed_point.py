"""Hessian-vector products at fixed parameters, the primal passes paid once.

A product ``H v`` by reverse-over-reverse differentiation runs the forward
pass, the backward pass (the gradient ``g``) and then the backward pass of
``g . v``. While the parameters stay where they are, the first two are the
same for every ``v``: a product needs only the last pass, the
vector-Jacobian product of the gradient with ``v`` (``H`` is symmetric).
`SplitProduct` cuts the traced product there; a `FixedPoint` keeps, for
each local data batch, the tensors the second pass reads (the residuals)
and answers each product with the second pass alone.

The residuals are computed once per point. Each product also returns
whether every variable the loss reads (parameters, BatchNorm statistics,
frozen weights) still holds the value the primal passes read (compared bit
for bit, in the graph, before the pass: a stale product is not computed);
the residuals are then recomputed at the new point, so assignments and
optimizer steps between products are always seen. The same check lets a
`Hessian` keep the passes of its last point between plain products (see
``Hessian.keep_passes``): a product at a new point costs one more graph
call, not a wasted pass. Where the points keep moving before every single
product (a training loop with one product per step), that call is skipped:
after two points in a row that answered one product each, products start
afresh without asking, and every fourth still asks, to see when a point
serves several again.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from ._engine import PerformanceWarning, _caller_level
from ._staging import Recycled, Staging, copy_cast

__all__ = ["FixedPoint", "default_memory_budget", "kept_memory_budget"]

# Points in a row that answered a single product each, after which products
# start afresh without first asking the kept passes (a stale ask costs a
# graph call: 0.4 ms on the 784-128-10 MLP, a gradient 2.5 ms) ...
_LONE_POINTS = 2
# ... but for one product in this many, to see when points last again.
_ASK_EVERY = 4


def default_memory_budget():
    """Bytes the residuals may hold: an eighth of the machine's memory, at most 4 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(4 * 2**30, total // 8))


def kept_memory_budget():
    """Bytes the passes kept between plain products may hold: a quarter of the default."""
    return default_memory_budget() // 4


class FixedPoint:
    """The kept primal passes of one `Hessian` for one stretch of fixed parameters.

    Parameters
    ----------
    split : callable
        Returns the Hessian's `SplitProduct` (made at the first call, which
        traces the loss: only inside a product's collective sum).
    batches : iterable of tuples
        This rank's data batches (each batch is read once per point).
    memory_budget : int
        Most bytes the residuals of all batches may hold. Over it, the
        fixed point is not taken: `active` is False and `reason` says why.
    quiet : bool, default: False
        Whether a fixed point that is not taken says so by a
        `PerformanceWarning` (not for the passes kept between plain
        products, which then stay what they were).

    Attributes
    ----------
    active : bool or None
        None before the first product, then whether products go through
        the kept passes.
    reason : str
        Why the kept passes are not used, when `active` is False.
    starts : int
        How often the primal passes were computed (one more after each
        change of a variable the loss reads).
    estimated_bytes : int or None
        The residuals' estimated size (set by the first product).
    """

    def __init__(self, split, batches, *, memory_budget, quiet=False):
        self._split_of = split
        self._quiet = bool(quiet)
        self._batches_of = batches
        self._budget = int(memory_budget)
        self._residuals = None
        self._served = 0  # products answered at the current residuals
        self._lone_points = 0  # points in a row that answered one product each
        self._unasked = 0  # products started without asking, in that state
        self.active = None
        self.reason = ""
        self.starts = 0
        self.estimated_bytes = None
        self._staging = Staging()
        self._results = Recycled()

    def product(self, matrix, out=None):
        """This rank's ``H @ matrix`` (float64, (n, k)); `active` must be True.

        Written into `out` ((n, k) float64, may be `matrix`) when given. A
        NaN or inf in `matrix` raises `ValueError` before any product (the
        residuals stay).
        """
        split = self._split_of()
        # The second pass takes and gives the vectors as rows, in the
        # variables' dtype (see Engine.fixed_point_pass). The request is a
        # copy, made once: `out` may be `matrix`.
        request = self._staging.tensor(matrix.T, split.dtype.as_numpy_dtype, finite=True)
        for _ in range(3):
            try:
                if self._residuals is not None and self._asks():
                    result = self._ask(split, request, out)
                else:
                    result = self._start(split, request, out)
            except BaseException:
                # A failed pass (or an interrupt) keeps nothing: the next
                # product starts afresh.
                self.close()
                raise
            if result is not None:
                return result
            # A variable moved since the primal passes read it.
            self._end_point()
        raise RuntimeError("the parameters changed during every one of three products.")

    def invalidate(self):
        """Drop the residuals; the next product recomputes them at the current point."""
        self._end_point()

    def close(self):
        """Drop the residuals, the staging buffer and the recycled result."""
        self._residuals = None
        self._staging.release()
        self._results.release()

    # ----------------------------------------------------------------- inside

    def fits(self):
        """Whether the residuals' estimated size is within the budget (warns if not)."""
        split = self._split_of()
        if split.failure:
            self.reason = (
                f"the product could not be cut into its primal and second passes "
                f"({split.failure}); each product recomputes the forward and backward passes."
            )
            self._warn()
            return False
        rows = [_rows(batch) for batch in self._batches_of()]
        self.estimated_bytes = int(sum(split.fixed_bytes + split.row_bytes * r for r in rows))
        if self.estimated_bytes <= self._budget:
            return True
        self.reason = (
            f"fixed-point products would hold about {self.estimated_bytes / 2**20:.0f} MiB "
            f"of intermediates, over the budget of {self._budget / 2**20:.0f} MiB; "
            "each product recomputes the forward and backward passes."
        )
        self._warn()
        return False

    def _asks(self):
        """Whether a product asks the kept passes first (else it starts afresh)."""
        if self._lone_points < _LONE_POINTS:
            return True
        self._unasked += 1
        return self._unasked % _ASK_EVERY == 0

    def _end_point(self):
        """Drop the residuals of a point that has moved, counting lone points."""
        if self._residuals is not None:
            self._lone_points = self._lone_points + 1 if self._served == 1 else 0
        self._residuals = None

    def _warn(self):
        if not self._quiet:
            warnings.warn(self.reason, PerformanceWarning, stacklevel=_caller_level())

    def _start(self, split, request, out):
        """The products with the primal passes, which are kept; None if stale."""
        residuals, total = [], None
        for batch in self._batches_of():
            part, stale, kept = split.fresh(request, tuple(batch))
            if stale:
                return None  # a variable moved while the passes ran
            residuals.append(kept)
            total = self._accumulate(total, part, out)
        self._residuals = residuals
        self._served = 1
        self.starts += 1
        return total.T

    def _ask(self, split, request, out):
        """The rows' products from the kept residuals, or None if they are stale."""
        total = None
        for residuals in self._residuals:
            part, stale = split.second_pass(request, residuals)
            if stale:
                # Not computed (see Engine.fixed_point_pass); nothing is
                # written into `out`, which may be the request's source.
                return None
            total = self._accumulate(total, part, out)
        # The point lasted: products ask again.
        self._served += 1
        self._lone_points = 0
        return total.T

    def _accumulate(self, total, part, out):
        """`total` + the rows `part` of one batch; the first part is copied into `out`'s rows.

        The copy casts to float64 in the same pass (the reply's buffer
        belongs to TF). Without `out`, the rows go into a recycled array
        (see `Recycled`).
        """
        if total is None:
            total = self._results.empty(part.shape) if out is None else out.T
            copy_cast(total, part)
        else:
            np.add(total, part, out=total)
        return total


def _rows(batch):
    """Number of samples in one batch (1 for a loss without data)."""
    for leaf in tf.nest.flatten(batch):
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] is not None:
            return int(shape[0])
    return 1
