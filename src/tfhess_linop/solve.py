"""Solvers (placeholder; being written)."""


def cg(*args, **kwargs):
    raise NotImplementedError

def minres(*args, **kwargs):
    raise NotImplementedError

def pcg(*args, **kwargs):
    raise NotImplementedError

class SolveResult:
    pass


class NegativeCurvature:
    pass
