"""An operator that counts its products and advances a progress bar.

The algorithms (`eigsh`, the estimators) see an ordinary ``LinearOperator``;
wrapping it is the one place that knows how many Hessian-vector products a
pass has spent, for the command's progress bars and reports and for the
Keras callback's budget.
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.sparse.linalg import LinearOperator

__all__ = ["BudgetSpent", "CountedOperator", "counting", "progress_bar"]

# A progress bar of `counting` appears only on passes longer than this (seconds).
DELAY = 1.0


class BudgetSpent(RuntimeError):
    """A product beyond the operator's `limit` was asked for."""


class CountedOperator(LinearOperator):
    """`operator`, counting the vectors it is applied to and updating `bar`.

    A ``matmat`` of k columns counts k; with ``vectorize=False`` it is k
    ``matvec`` calls. A product that would take `count` beyond `limit`
    (None: no limit) raises `BudgetSpent` instead. The communicator of
    `operator` (``comm``) is kept, so collective algorithms see the same
    one; the count is the same on every rank, so is the stop.
    """

    def __init__(self, operator, bar=None, *, vectorize=True):
        self.operator = operator
        self.comm = getattr(operator, "comm", None)
        self.bar = bar
        self.count = 0
        self.limit = None
        self.vectorize = vectorize
        super().__init__(dtype=operator.dtype, shape=operator.shape)

    def _advance(self, columns):
        if self.limit is not None and self.count + columns > self.limit:
            raise BudgetSpent(f"more than {self.limit} products")
        self.count += columns
        if self.bar is not None:
            self.bar.update(columns)

    def _matvec(self, v):
        self._advance(1)
        return self.operator.matvec(v)

    def _matmat(self, V):
        if not self.vectorize:
            return np.column_stack([self._matvec(v) for v in V.T])
        self._advance(V.shape[1])
        return self.operator.matmat(V)

    def _adjoint(self):
        return self


def progress_bar(description, *, show, total=None, delay=0.0):
    """A tqdm bar counting Hessian-vector products; a disabled one unless `show`."""
    from tqdm.auto import tqdm

    return tqdm(
        desc=description, total=total, unit="hvp", delay=delay, disable=not show, leave=False
    )


@contextlib.contextmanager
def counting(operator, description, show, total=None):
    """`operator` as a `CountedOperator` advancing a progress bar while the block runs.

    The bar (only if `show`) appears once the pass has lasted `DELAY`
    seconds; `total` is the number of products, when known.
    """
    bar = progress_bar(description, show=show, total=total, delay=DELAY)
    try:
        yield CountedOperator(operator, bar)
    finally:
        bar.close()
