"""Estimators (placeholder; being written)."""


def exact_diagonal(*args, **kwargs):
    raise NotImplementedError

def hutchinson_diagonal(*args, **kwargs):
    raise NotImplementedError

def hutchinson_trace(*args, **kwargs):
    raise NotImplementedError

def hutchpp_trace(*args, **kwargs):
    raise NotImplementedError

def plot_spectral_density(*args, **kwargs):
    raise NotImplementedError

def spectral_density(*args, **kwargs):
    raise NotImplementedError

def xdiag(*args, **kwargs):
    raise NotImplementedError

def xtrace(*args, **kwargs):
    raise NotImplementedError
