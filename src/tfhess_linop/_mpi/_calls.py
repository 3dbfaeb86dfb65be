"""The mark of a public collective call: ranks agree on entering and on leaving it.

Separate from the per-product exchange of :func:`~._reductions.collective_sum`:
this is the call-level half of the failure agreement, with the description
of the call (:func:`_describe`) that every rank must match.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._agreement import CALLS, LEFT, OK, agree_status, exchange, hash_description, is_agreed

__all__ = ["collective_call"]


def _describe(value):
    """A short, process-independent text for one argument of a collective call."""
    if value is None or isinstance(value, (bool, str)):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, numbers.Complex):
        return repr(complex(value))
    shape = getattr(value, "shape", None)
    if isinstance(value, np.ndarray) or shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    if callable(value):
        return "a callable"
    return type(value).__name__


class collective_call:  # lower case: used like a function, `with collective_call(...)`
    """Mark a block as one public collective call over `comm`.

    Collective over `comm`. On entry (outermost call only) the ranks check
    that they all make the same call: `name` and the described `arguments`
    (numbers and strings by value, arrays by shape). On exit they exchange
    their status again, so that a rank leaving with an exception that the
    others did not see (raised outside a product) makes them raise too, at
    their next product or at the end of the call. Nested calls (``svds``
    calling ``eigsh``) only add their name to the description of the
    products inside them. Serial runs (``comm`` None or one rank) do
    nothing.

    Parameters
    ----------
    comm : mpi4py communicator or None
    name : str
        The public function, e.g. ``"eigsh"``.
    **arguments
        The arguments that every rank must pass alike.
    """

    def __init__(self, comm, name, **arguments):
        self.comm, self.name, self.arguments = comm, name, arguments

    def __enter__(self):
        self._token = None
        if self.comm is None or self.comm.Get_size() == 1:
            return self
        outer = CALLS.get()
        self._outermost = not outer
        if self._outermost:
            described = ", ".join(f"{k}={_describe(v)}" for k, v in self.arguments.items())
            self._description = f"{self.name}({described})"
        else:
            self._description = self.name
        self._token = CALLS.set((*outer, self._description))
        if not self._outermost:
            return self
        description = "entering " + self._description
        try:
            with exchange(self.comm):
                agree_status(self.comm, OK, description, hash_description(description), None)
        except BaseException as exc:
            if is_agreed(exc):
                CALLS.reset(self._token)
                raise
            # An interrupt held back over the exchange: the other ranks are in
            # the call now, so leave it the way the call's body would.
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._token is None:
            return False
        try:
            if self._outermost and (exc is None or not is_agreed(exc)):
                description = "leaving " + self._description
                with exchange(self.comm):
                    agree_status(
                        self.comm,
                        OK if exc is None else LEFT,
                        description,
                        hash_description(description),
                        exc,
                    )
        finally:
            CALLS.reset(self._token)
        return False
