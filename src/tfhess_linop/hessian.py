"""Placeholder; being written."""


class Hessian:
    pass
