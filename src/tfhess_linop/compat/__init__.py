"""Interfaces of earlier tools, on top of `tfhess_linop`.

- :mod:`tfhess_linop.compat.numsa`: the seed's ``numsa.TFHessian.Hessian``.
"""
