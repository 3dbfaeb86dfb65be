"""Stochastic trace estimators: Hutchinson, Hutch++ and XTrace."""

from __future__ import annotations

import numpy as np

from .._checks import collective, generator, integer_at_least
from .._linalg import frobenius_inner, orthonormal_qr, single_threaded_blas, subtract_product
from ._common import (
    PROBE_DISTRIBUTIONS,
    EstimatePair,
    apply,
    apply_owned,
    as_square_operator,
    blocks,
    check_block_size,
    check_distribution,
    draw_probes,
    hutchinson_call,
    identity_diagonal,
    iv_exchangeable,
    orthonormal_range,
    spare_block,
    standard_error,
)

__all__ = ["TraceEstimate", "hutchinson_trace", "hutchpp_trace", "xtrace"]


class TraceEstimate(EstimatePair):
    """Result of a trace estimator: the pair ``(estimate, standard_error)``.

    Unpacks like a tuple, ``estimate, standard_error = hutchpp_trace(A, 30)``.

    Attributes
    ----------
    estimate : float
        The estimate of ``trace(A)``.
    standard_error : float
        Estimated standard deviation of `estimate`; 0.0 when it is exact.
    method : str
        ``"hutchinson"``, ``"hutch++"``, ``"xtrace"`` or ``"exact"``.
    num_matvecs : int
        Number of products with `A` (columns passed to ``A.matmat``).
    """

    def __new__(cls, estimate, standard_error, *, method, num_matvecs):
        return super().__new__(
            cls,
            float(estimate),
            float(standard_error),
            method=method,
            num_matvecs=num_matvecs,
        )

    def __repr__(self):
        return (
            f"TraceEstimate(estimate={self.estimate!r}, "
            f"standard_error={self.standard_error!r}, method={self.method!r}, "
            f"num_matvecs={self.num_matvecs})"
        )


def _exact_trace(A, n, comm):
    block_size = check_block_size(None, n, n)
    diagonal = identity_diagonal(A, n, block_size, comm)
    return TraceEstimate(diagonal.sum(), 0.0, method="exact", num_matvecs=n)


def hutchinson_trace(A, num_matvecs, *, rng=None, distribution="rademacher", block_size=None):
    r"""Estimate the trace of a square operator with Hutchinson's estimator.

    Collective over `comm` (the ``A.comm`` attribute, if any): every rank
    draws the same probes and returns the same result.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The operator; only ``A.matmat`` is used.
    num_matvecs : int
        Number of probe vectors, i.e. of products with `A`; at least 2.
    rng : None, int, SeedSequence or numpy.random.Generator, optional
        Source of the probes.
    distribution : {"rademacher", "normal"}, optional
        Entries of the probes: random signs (the default; smallest variance
        for real matrices) or standard normal.
    block_size : int, optional
        Number of probes per ``A.matmat`` call. Default: 64, or fewer so that
        a block takes at most 32 MiB. The result does not depend on it.

    Returns
    -------
    TraceEstimate
        The pair ``(estimate, standard_error)``, with ``method="hutchinson"``.

    See Also
    --------
    hutchpp_trace, xtrace : Far more accurate per product when the spectrum
        of `A` decays.

    Notes
    -----
    With probes :math:`z_1, \dots, z_m` whose entries are independent with
    mean 0 and variance 1, :math:`\mathbb{E}[z^\top A z] = \operatorname{tr}
    A`, so

    .. math:: \hat t = \frac1m \sum_{i=1}^m z_i^\top A z_i

    is unbiased [1]_. Its variance is :math:`2(\|A\|_F^2 - \sum_i a_{ii}^2)/m`
    for random signs and :math:`2\|A\|_F^2/m` for Gaussian probes (symmetric
    `A`), so the error decreases like :math:`1/\sqrt m`. The standard error is
    the sample standard deviation of the :math:`z_i^\top A z_i` over
    :math:`\sqrt m`.

    References
    ----------
    .. [1] M. F. Hutchinson, "A stochastic estimator of the trace of the
       influence matrix for Laplacian smoothing splines", Communications in
       Statistics - Simulation and Computation 19(2), 433-450, 1990.

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import hutchinson_trace
    >>> rng = np.random.default_rng(0)
    >>> U, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    >>> A = (U * np.linspace(1.0, 2.0, 100)) @ U.T
    >>> estimate, standard_error = hutchinson_trace(A, 200, rng=1)
    >>> bool(abs(estimate - np.trace(A)) < 4 * standard_error)
    True
    """
    with hutchinson_call(
        "hutchinson_trace", A, num_matvecs, rng, distribution, block_size
    ) as checked:
        A, n, comm, m, rng, distribution, block_size = checked
        samples = np.empty(m)
        # Two (n, block_size) blocks for the whole call, as in
        # hutchinson_diagonal: no fresh block per block of probes.
        probes = np.empty((n, block_size), order="F")
        products = np.empty((n, block_size), order="F")
        for start, stop in blocks(m, block_size):
            size = stop - start
            Z = draw_probes(rng, n, size, comm, distribution, out=probes[:, :size])
            samples[start:stop] = np.einsum("ij,ij->j", Z, apply(A, Z, out=products[:, :size]))
        return TraceEstimate(
            samples.mean(), standard_error(samples), method="hutchinson", num_matvecs=m
        )


def _iv_hutchpp_trace(A, num_matvecs, rng, distribution):
    A, n, comm = as_square_operator(A)
    num_matvecs = integer_at_least(num_matvecs, "num_matvecs", 4, " for Hutch++")
    distribution = check_distribution(distribution, PROBE_DISTRIBUTIONS)
    return A, n, comm, num_matvecs, generator(rng), distribution


def hutchpp_trace(A, num_matvecs, *, rng=None, distribution="rademacher"):
    r"""Estimate the trace of a symmetric operator with Hutch++.

    Collective over `comm` (the ``A.comm`` attribute, if any): every rank
    draws the same probes and returns the same result.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The symmetric operator; only ``A.matmat`` is used.
    num_matvecs : int
        Number of products with `A`; at least 4. With ``num_matvecs >= n``
        the trace is computed exactly from n products with identity columns.
    rng : None, int, SeedSequence or numpy.random.Generator, optional
        Source of the random vectors.
    distribution : {"rademacher", "normal"}, optional
        Entries of the sketch and of the Hutchinson probes of the deflated
        part: random signs (the default, as in [1]_) or standard normal.

    Returns
    -------
    TraceEstimate
        The pair ``(estimate, standard_error)``, with ``method="hutch++"``.

    See Also
    --------
    xtrace : Usually more accurate for the same number of products.
    hutchinson_trace

    Notes
    -----
    With :math:`s = \lfloor m/3 \rfloor` and :math:`g = m - 2s`, Hutch++ [1]_
    spends :math:`s` products on a sketch :math:`AS` (random :math:`S`),
    takes an orthonormal basis :math:`Q` of its range, spends :math:`s` more
    on :math:`AQ`, and the remaining :math:`g` on Hutchinson's estimator of the
    deflated remainder:

    .. math:: \hat t = \operatorname{tr}(Q^\top A Q) + \frac1g \sum_{j=1}^g
              z_j^\top (I - QQ^\top) A (I - QQ^\top) z_j .

    It is unbiased, and for positive semi-definite `A` its relative error
    decreases like :math:`1/m` instead of :math:`1/\sqrt m` [1]_. The
    standard error is that of the Hutchinson part.

    References
    ----------
    .. [1] R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++:
       Optimal stochastic trace estimation", Symposium on Simplicity in
       Algorithms (SOSA), 142-155, 2021. :doi:`10.1137/1.9781611976496.16`

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import hutchpp_trace
    >>> rng = np.random.default_rng(0)
    >>> U, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    >>> A = (U / np.arange(1, 301) ** 2) @ U.T          # eigenvalues 1/i^2
    >>> estimate, standard_error = hutchpp_trace(A, 30, rng=1)
    >>> bool(abs(estimate - np.trace(A)) < 0.02 * np.trace(A))
    True
    """
    with (
        collective(A, "hutchpp_trace", num_matvecs=num_matvecs, rng=rng, distribution=distribution),
        single_threaded_blas(),
    ):
        A, n, comm, m, rng, distribution = _iv_hutchpp_trace(A, num_matvecs, rng, distribution)
        if m >= n:
            return _exact_trace(A, n, comm)
        s, g = m // 3, m - 2 * (m // 3)
        # Two (n, s) blocks and one (n, g) block, each written again and
        # again: a fresh block of a 1.07M-parameter model costs page faults
        # (see Hessian.hvp's `out`), six of them 1 s of a 5 s call.
        S = draw_probes(rng, n, s, comm, distribution)
        Y = apply(A, S, out=S)
        Q, _ = orthonormal_qr(Y)
        AQ = apply(A, Q, out=Y)
        low_rank_part = frobenius_inner(Q, AQ)
        G = draw_probes(rng, n, g, comm, distribution, out=AQ if g == s else None)
        subtract_product(G, Q, Q.T @ G)
        AG = apply(A, G, out=Q if g == s else None)
        remainder = np.einsum("ij,ij->j", G, AG)
        return TraceEstimate(
            low_rank_part + remainder.mean(),
            standard_error(remainder),
            method="hutch++",
            num_matvecs=m,
        )


def xtrace(A, num_matvecs, *, rng=None):
    r"""Estimate the trace of a symmetric operator with XTrace.

    Collective over `comm` (the ``A.comm`` attribute, if any): every rank
    draws the same probes and returns the same result.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The symmetric operator; only ``A.matmat`` is used.
    num_matvecs : int
        Budget of products with `A`; at least 4. XTrace uses
        ``2 * (num_matvecs // 2)`` of them (fewer when the sketch reveals that
        `A` has rank below ``num_matvecs // 2``). With ``num_matvecs >= n`` the
        trace is computed exactly from n products with identity columns.
    rng : None, int, SeedSequence or numpy.random.Generator, optional
        Source of the (Gaussian) test vectors.

    Returns
    -------
    TraceEstimate
        The pair ``(estimate, standard_error)``, with ``method="xtrace"``.

    See Also
    --------
    hutchpp_trace, hutchinson_trace

    Notes
    -----
    XTrace [1]_ uses every test vector both to build the low-rank part and to
    estimate the remainder, exchanging their roles. With :math:`s = \lfloor
    m/2 \rfloor` Gaussian test vectors :math:`\Omega = [\omega_1, \dots,
    \omega_s]` and :math:`Y = A\Omega`, let :math:`P_{(i)}` be the orthogonal
    projector onto the span of the columns of :math:`Y` other than
    :math:`y_i`. :math:`P_{(i)}` does not depend on :math:`\omega_i`, so each

    .. math:: t_i = \operatorname{tr}(P_{(i)} A) + \frac{n - s + 1}{\|u_i\|^2}
              u_i^\top A u_i, \qquad u_i = (I - P_{(i)})\omega_i,

    is an unbiased estimate (:math:`u_i` rescaled to length
    :math:`\sqrt{n-s+1}` is uniform on a sphere in the range of
    :math:`I - P_{(i)}`), and :math:`\hat t = \frac1s \sum_i t_i`. All
    :math:`t_i` follow from :math:`Y = QR`, :math:`AQ` and
    :math:`s \times s` matrices: if :math:`s_i` is the normalised
    :math:`i`-th column of :math:`R^{-\top}`, then
    :math:`P_{(i)} = Q(I - s_i s_i^\top)Q^\top`. The standard error is the
    sample standard deviation of the :math:`t_i` over :math:`\sqrt s`, as in
    [1]_. The :math:`s \times s` algebra uses the singular value
    decomposition of :math:`R`, and when :math:`Y` is numerically rank
    deficient (so that :math:`A` has numerical rank :math:`r < s`) the
    projector onto the :math:`r`-dimensional range of :math:`Y` is used for
    every :math:`i`, at the cost of :math:`r` further products.

    References
    ----------
    .. [1] E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: Making the
       most of every sample in stochastic trace estimation", SIAM Journal on
       Matrix Analysis and Applications 45(1), 1-23, 2024.
       :doi:`10.1137/23M1548323`

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import xtrace
    >>> rng = np.random.default_rng(0)
    >>> U, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    >>> A = (U / np.arange(1, 301) ** 2) @ U.T          # eigenvalues 1/i^2
    >>> estimate, standard_error = xtrace(A, 30, rng=1)
    >>> bool(abs(estimate - np.trace(A)) < 0.01 * np.trace(A))
    True
    """
    with collective(A, "xtrace", num_matvecs=num_matvecs, rng=rng), single_threaded_blas():
        A, n, comm, m, rng = iv_exchangeable(A, num_matvecs, rng, "XTrace")
        if m >= n:
            return _exact_trace(A, n, comm)
        s = m // 2
        Omega = draw_probes(rng, n, s, comm, "normal")
        Y = apply_owned(A, Omega)
        Q, U, sigma, Vt, rank = orthonormal_range(Y)
        if rank < s:
            samples = _rank_deficient_samples(A, Omega, Y, Q @ U[:, :rank], n)
            num_used = s + rank
        else:
            samples = _leave_one_out_samples(A, Omega, Q, U, sigma, Vt, n, spare=Y)
            num_used = 2 * s
        return TraceEstimate(
            samples.mean(), standard_error(samples), method="xtrace", num_matvecs=num_used
        )


def _leave_one_out_samples(A, Omega, Q, U, sigma, Vt, n, spare):
    """The XTrace samples t_i for a sketch ``Y = Q @ B`` of full column rank.

    Here ``B = U @ diag(sigma) @ Vt``; the columns of ``B^{-T} = U @ diag(1/sigma)
    @ Vt``, normalised, are the directions that leaving out one column of ``Y``
    removes. ``A Q`` is written into `spare` (the sketch, not needed again).
    """
    s = Vt.shape[0]
    Z = apply(A, Q, out=spare_block(spare, Q))
    H = Q.T @ Z
    H = (H + H.T) / 2
    W = Q.T @ Omega
    B = (U * sigma) @ Vt
    S = (U / sigma) @ Vt
    norms = np.linalg.norm(S, axis=0)
    S /= norms
    # With w_i = Q^T omega_i and c_i = (I - s_i s_i^T) w_i, P_(i) omega_i = Q c_i,
    # so u_i = omega_i - Q c_i and, as A omega_i = Q b_i and b_i^T s_i = 1/norm_i,
    # u_i^T A u_i = -b_i^T w_i + 2 s_i^T w_i / norm_i + c_i^T H c_i and
    # ||u_i||^2 = ||omega_i||^2 - ||c_i||^2: no product with A beyond AQ.
    SW = np.einsum("ki,ki->i", S, W)
    C = W - S * SW
    SHS = np.einsum("ki,ki->i", S, H @ S)
    CHC = np.einsum("ki,ki->i", C, H @ C)
    BW = np.einsum("ki,ki->i", B, W)
    low_rank_part = np.trace(H) - SHS
    remainder = -BW + 2 * SW / norms + CHC
    residual_norms = np.einsum("ij,ij->j", Omega, Omega) - np.einsum("ki,ki->i", C, C)
    return low_rank_part + (n - s + 1) / residual_norms * remainder


def _rank_deficient_samples(A, Omega, Y, Q, n):
    """XTrace samples when range(Y) = range(Q) has dimension r below s."""
    r = Q.shape[1]
    Z = apply(A, Q)
    W = Q.T @ Omega
    U = Omega - Q @ W
    AU = Y - Z @ W
    residual_norms = np.einsum("ij,ij->j", U, U)
    remainder = np.einsum("ij,ij->j", U, AU)
    return frobenius_inner(Q, Z) + (n - r) / residual_norms * remainder
