"""Checks (placeholder; being written)."""


def dottest(*args, **kwargs):
    raise NotImplementedError

def symmetry_test(*args, **kwargs):
    raise NotImplementedError

def taylor_test(*args, **kwargs):
    raise NotImplementedError
