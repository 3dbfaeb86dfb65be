"""Eigenvalues (placeholder; being written)."""


def eigsh(*args, **kwargs):
    raise NotImplementedError

def lobpcg(*args, **kwargs):
    raise NotImplementedError

def power_iteration(*args, **kwargs):
    raise NotImplementedError
