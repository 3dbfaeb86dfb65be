"""The loss forms of the ``numsa`` interface, and the cache of their compiled Hessians.

Separate from the class: the seed's notebook builds a new ``Hessian`` for the
same loss and weights at every training step, so construction looks up a
compiled :class:`tfhess_linop.Hessian` here before tracing a new one.
"""

from __future__ import annotations

import collections
import inspect

from ..hessian import Hessian

__all__ = ["compiled_hessian", "takes_comm"]

# Compiled Hessians kept for reuse: the seed's notebook builds a new Hessian
# for the same loss and weights at every training step.
_CACHE_SIZE = 8
_cache: collections.OrderedDict = collections.OrderedDict()


def takes_comm(Loss):
    """Whether `Loss` is the seed's parallel form ``Loss(weights, comm)``."""
    if not callable(Loss):
        raise TypeError(f"`Loss` must be callable; got {type(Loss).__name__}.")
    try:
        parameters = list(inspect.signature(Loss).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        q
        for q in parameters
        if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD) and q.default is q.empty
    ]
    return len(positional) >= 2 or any(q.name == "comm" for q in parameters)


def compiled_hessian(Loss, x0, comm, takes_comm):
    """A `tfhess_linop.Hessian` of `Loss` at `x0`, reused for the same loss and variables."""
    variables = tuple(x0) if isinstance(x0, (list, tuple)) else (x0,)
    key = (id(Loss), tuple(id(v) for v in variables), id(comm))
    entry = _cache.get(key)
    if (
        entry is not None
        and entry[0] is Loss
        and all(a is b for a, b in zip(entry[1], variables, strict=True))
    ):
        _cache.move_to_end(key)
        return entry[2]
    if takes_comm:

        def loss(weights):
            return Loss(weights, comm)
    else:
        loss = Loss
    hessian = Hessian(loss, x0, comm=comm)
    _cache[key] = (Loss, variables, hessian)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return hessian
