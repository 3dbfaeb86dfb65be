"""Linear systems with a symmetric operator, and negative-curvature certificates.

:func:`cg` and :func:`minres` take SciPy's arguments and unpack like SciPy's
``x, info``, but return a :class:`SolveResult` that also says whether the
operator showed non-positive curvature, and along which direction: for a
Hessian that is a descent direction for a saddle point or a non-convex
region, which truncated-Newton methods need (Steihaug's CG). :func:`pcg` is
CG preconditioned by a randomized Nyström approximation of the operator.

``info`` follows SciPy: 0 converged, a positive value the number of
iterations made without converging, and :data:`NEGATIVE_CURVATURE_INFO`
(-2) for "stopped on negative curvature" (CG only; MINRES keeps solving).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _checks, _mpi

__all__ = [
    "NEGATIVE_CURVATURE_INFO",
    "NegativeCurvature",
    "NystromPreconditioner",
    "SolveResult",
    "cg",
    "minres",
    "nystrom_preconditioner",
    "pcg",
]

#: ``info`` of :func:`cg` and :func:`pcg` when they stopped at a direction of
#: non-positive curvature (SciPy uses > 0 for "not converged" and -1 for
#: breakdown).
NEGATIVE_CURVATURE_INFO = -2


# eq=False: the fields hold arrays, whose == is elementwise, not a bool.
@dataclass(frozen=True, eq=False)
class NegativeCurvature:
    """A direction along which the operator has non-positive curvature.

    Attributes
    ----------
    direction : ndarray, shape (n,)
        The direction d (not normalised).
    curvature : float
        The Rayleigh quotient :math:`d^T A d / \\|d\\|^2 \\le 0`, an upper bound
        on the smallest eigenvalue of A.
    iteration : int
        The (0-based) iteration of the solver that found it.
    """

    direction: np.ndarray
    curvature: float
    iteration: int


@dataclass(frozen=True, eq=False)
class SolveResult:
    """Outcome of :func:`cg`, :func:`minres` or :func:`pcg`.

    Unpacks and indexes like SciPy's ``(x, info)`` tuple:
    ``x, info = cg(A, b)``, ``cg(A, b)[0]``.

    Attributes
    ----------
    x : ndarray, shape (n,)
        The last iterate.
    info : int
        0: converged; > 0: not converged after that many iterations;
        :data:`NEGATIVE_CURVATURE_INFO` (-2): CG stopped on negative curvature.
    negative_curvature : NegativeCurvature or None
        The first direction of non-positive curvature met, if any.
    n_matvec : int
        Number of products with A (Hessian-vector products), including the
        preconditioner's construction for :func:`pcg`.
    residual_norm : float
        Norm of the residual ``b - A x`` as updated by the recurrence
        (preconditioned MINRES: in the norm defined by M).
    n_iter : int
        Number of iterations.
    """

    x: np.ndarray
    info: int
    negative_curvature: NegativeCurvature | None
    n_matvec: int
    residual_norm: float
    n_iter: int

    def __iter__(self):
        return iter((self.x, self.info))

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return (self.x, self.info)[index]


def _iv_system(A, b, x0, rtol, atol, maxiter, M, default_maxiter):
    A, n = _checks.square_operator(A)
    b = _checks.vector(b, n, "b")
    x0 = None if x0 is None else _checks.vector(x0, n, "x0")
    rtol = _checks.nonnegative_real(rtol, "rtol")
    atol = _checks.nonnegative_real(atol, "atol")
    if maxiter is None:
        maxiter = default_maxiter * n
    maxiter = _checks.positive_integer(maxiter, "maxiter")
    if M is not None:
        M, m = _checks.square_operator(M, "M")
        if m != n:
            raise ValueError(f"`M` must have shape ({n}, {n}) like `A`, got {M.shape}.")
    tol = max(atol, rtol * float(np.linalg.norm(b)))
    return A, b, x0, tol, maxiter, M


def cg(A, b, x0=None, *, rtol=1e-5, atol=0.0, maxiter=None, M=None, callback=None):
    """Solve ``A x = b`` by conjugate gradients, stopping on negative curvature.

    The conjugate gradient method for a symmetric operator, with Steihaug's
    test [1]_: at the first search direction d with :math:`d^T A d \\le 0`
    (A is not positive definite on the Krylov space), CG stops and returns
    its last iterate with ``info = -2`` and d in ``negative_curvature``. On a
    positive definite operator this never happens and CG is SciPy's.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator.
    b : ndarray, shape (n,) or (n, 1)
        Right-hand side (not modified).
    x0 : ndarray, shape (n,) or (n, 1), optional
        Initial guess (not modified); zero by default.
    rtol, atol : float, optional
        Converged when :math:`\\|b - A x\\| \\le \\max(atol, rtol \\|b\\|)`.
    maxiter : int, optional
        Maximum number of iterations (one product each), 10 n by default.
    M : LinearOperator, ndarray or sparse array, shape (n, n), optional
        Symmetric positive definite preconditioner approximating
        :math:`A^{-1}`, e.g. :func:`nystrom_preconditioner`.
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration that updates x.

    Returns
    -------
    SolveResult
        Unpacks as ``x, info``; also ``negative_curvature``, ``n_matvec``,
        ``residual_norm``, ``n_iter``.

    Notes
    -----
    Like :func:`scipy.sparse.linalg.cg`, ``maxiter=1`` makes one iteration,
    calls `callback` once and returns ``info = 1`` unless that iteration
    converged. Unlike SciPy, the residual is also tested after the last
    iteration, so convergence at exactly `maxiter` iterations gives 0.

    References
    ----------
    .. [1] T. Steihaug, "The conjugate gradient method and trust regions in
       large scale optimization", SIAM J. Numer. Anal. 20(3), 1983.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> b = np.array([1.0, 2.0])
    >>> x, info = thl.cg(A, b, rtol=1e-12)
    >>> info, np.allclose(x, np.linalg.solve(A, b))
    (0, True)

    On the indefinite Hessian of :math:`2x^3y^3` at (1, 1) (eigenvalues 30
    and -6), CG stops and returns a direction of negative curvature:

    >>> H = np.array([[12.0, 18.0], [18.0, 12.0]])
    >>> result = thl.cg(H, np.array([1.0, -1.0]))
    >>> result.info, result.negative_curvature.curvature
    (-2, -6.0)
    """
    with _checks.collective(
        A, "cg", b=b, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=callback
    ):
        A, b, x0, tol, maxiter, M = _iv_system(A, b, x0, rtol, atol, maxiter, M, 10)
        return _conjugate_gradient(A, b, x0, tol, maxiter, M, callback, n_matvec=0)


def _conjugate_gradient(A, b, x0, tol, maxiter, M, callback, n_matvec):
    n = b.shape[0]
    if not np.any(b):
        return SolveResult(np.zeros(n), 0, None, n_matvec, 0.0, 0)
    if x0 is None or not np.any(x0):
        x, r = np.zeros(n), b.copy()
    else:
        x, r = x0.copy(), b - A.matvec(x0)
        n_matvec += 1
    residual_norm = float(np.linalg.norm(r))
    rho_previous, p = None, None
    for iteration in range(maxiter):
        if residual_norm <= tol:
            return SolveResult(x, 0, None, n_matvec, residual_norm, iteration)
        z = r if M is None else M.matvec(r)
        rho = float(r @ z)
        p = z.copy() if p is None else z + (rho / rho_previous) * p
        q = A.matvec(p)
        n_matvec += 1
        curvature = float(p @ q)
        if curvature <= 0.0:
            certificate = NegativeCurvature(p, curvature / float(p @ p), iteration)
            return SolveResult(
                x, NEGATIVE_CURVATURE_INFO, certificate, n_matvec, residual_norm, iteration
            )
        alpha = rho / curvature
        x = x + alpha * p
        r -= alpha * q
        residual_norm = float(np.linalg.norm(r))
        rho_previous = rho
        if callback is not None:
            callback(x)
    info = 0 if residual_norm <= tol else maxiter
    return SolveResult(x, info, None, n_matvec, residual_norm, maxiter)


def _iv_minres(A, b, x0, rtol, atol, shift, maxiter, M):
    A, b, x0, tol, maxiter, M = _iv_system(A, b, x0, rtol, atol, maxiter, M, 5)
    return A, b, x0, tol, maxiter, M, _checks.real(shift, "shift")


def minres(A, b, x0=None, *, rtol=1e-5, atol=0.0, shift=0.0, maxiter=None, M=None, callback=None):
    """Solve ``(A - shift I) x = b`` by MINRES, recording negative curvature.

    The minimum residual method of Paige and Saunders [1]_ for a symmetric,
    possibly indefinite or singular operator. It does not stop on negative
    curvature; it reports the first certificate it meets: the Lanczos
    process MINRES runs on is the one of CG, and the CG search direction
    :math:`p_k` (a combination of the Lanczos vectors, with
    :math:`p_k^T A p_k` the k-th pivot of the :math:`LDL^T` factorisation of
    the Lanczos matrix) is recorded at the first non-positive pivot. That is
    where :func:`cg` would stop, at no extra product.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator.
    b : ndarray, shape (n,) or (n, 1)
        Right-hand side (not modified).
    x0 : ndarray, shape (n,) or (n, 1), optional
        Initial guess (not modified); zero by default.
    rtol, atol : float, optional
        Converged when the residual norm is at most
        :math:`\\max(atol, rtol \\|b\\|)` (SciPy's ``minres`` instead tests
        :math:`\\|r\\| / (\\|A\\| \\|x\\|)`, which can stop with a large
        residual), or when the residual is numerically orthogonal to the
        range of A, :math:`\\|A r\\| \\le rtol \\|A\\| \\|r\\|` (a least-squares
        solution of an inconsistent singular system).
    shift : float, optional
        Solve with :math:`A - shift\\, I`; curvature is measured for it too.
    maxiter : int, optional
        Maximum number of iterations (one product each), 5 n by default.
    M : LinearOperator, ndarray or sparse array, shape (n, n), optional
        Symmetric positive definite preconditioner approximating
        :math:`A^{-1}`.
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration.

    Returns
    -------
    SolveResult
        Unpacks as ``x, info``; ``info`` is 0 or the iteration count (never
        -2); ``negative_curvature`` holds the first certificate.

    Notes
    -----
    On an inconsistent singular system the result is a least-squares
    solution, but possibly one of very large norm, as with SciPy's
    ``minres`` (MINRES-QLP would give the minimum-norm one).

    References
    ----------
    .. [1] C. C. Paige, M. A. Saunders, "Solution of sparse indefinite
       systems of linear equations", SIAM J. Numer. Anal. 12(4), 1975.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> H = np.array([[12.0, 18.0], [18.0, 12.0]])
    >>> b = np.array([1.0, 2.0])
    >>> result = thl.minres(H, b, rtol=1e-12)
    >>> result.info, np.allclose(result.x, np.linalg.solve(H, b))
    (0, True)
    >>> d = result.negative_curvature.direction
    >>> bool(d @ H @ d <= 0)
    True
    """
    with _checks.collective(
        A,
        "minres",
        b=b,
        x0=x0,
        rtol=rtol,
        atol=atol,
        shift=shift,
        maxiter=maxiter,
        M=M,
        callback=callback,
    ):
        A, b, x0, tol, maxiter, M, shift = _iv_minres(A, b, x0, rtol, atol, shift, maxiter, M)
        n = b.shape[0]
        n_matvec = 0
        if x0 is None or not np.any(x0):
            x, r1 = np.zeros(n), b.copy()
        else:
            x, r1 = x0.copy(), b - A.matvec(x0)
            n_matvec += 1
        y = r1 if M is None else M.matvec(r1)
        beta1 = float(r1 @ y)
        if beta1 < 0:
            raise ValueError("`M` must be positive definite: found rᵀ M r < 0.")
        beta1 = np.sqrt(beta1)
        if beta1 == 0.0 or np.sqrt(float(r1 @ r1)) <= tol:
            return SolveResult(x, 0, None, n_matvec, float(np.linalg.norm(r1)), 0)

        eps = np.finfo(np.float64).eps
        beta, old_beta = beta1, 0.0
        r2 = r1
        # Paige-Saunders: rotations (cs, sn), their carried quantities, and the
        # three most recent search vectors w.
        cs, sn, dbar, epsln, phibar, tnorm2 = -1.0, 0.0, 0.0, 0.0, beta1, 0.0
        w, w2 = np.zeros(n), np.zeros(n)
        # CG pivot d_k = p_kᵀ A p_k and direction p_k, for the curvature test.
        pivot, cg_direction, certificate = None, None, None
        info = maxiter
        for iteration in range(maxiter):
            v = y / beta
            y = A.matvec(v) - shift * v
            n_matvec += 1
            if iteration > 0:
                y = y - (beta / old_beta) * r1
            alpha = float(v @ y)
            y = y - (alpha / beta) * r2
            r1, r2 = r2, y
            y = r2 if M is None else M.matvec(r2)
            old_beta = beta
            beta = float(r2 @ y)
            if beta < 0:
                raise ValueError("`M` must be positive definite: found rᵀ M r < 0.")
            beta = np.sqrt(beta)
            tnorm2 += alpha**2 + old_beta**2 + beta**2

            if certificate is None:
                if pivot is None:
                    pivot, cg_direction = alpha, v.copy()
                else:
                    ratio = old_beta / pivot
                    pivot = alpha - ratio * old_beta
                    cg_direction = v - ratio * cg_direction
                if pivot <= 0.0:
                    certificate = NegativeCurvature(
                        cg_direction,
                        pivot / float(cg_direction @ cg_direction),
                        iteration,
                    )

            old_epsln = epsln
            delta = cs * dbar + sn * alpha
            gbar = sn * dbar - cs * alpha
            epsln = sn * beta
            dbar = -cs * beta
            root = np.hypot(gbar, dbar)
            gamma = max(np.hypot(gbar, beta), eps)
            cs, sn = gbar / gamma, beta / gamma
            phi = cs * phibar
            phibar = sn * phibar
            w1, w2 = w2, w
            w = (v - old_epsln * w1 - delta * w2) / gamma
            x = x + phi * w
            if callback is not None:
                callback(x)

            # root = ‖A r‖ / ‖r‖ for the previous residual; beta = 0: the Krylov
            # space is invariant and x is its best solution.
            a_norm = np.sqrt(tnorm2)
            if phibar <= tol or root <= rtol * a_norm or beta <= eps * a_norm:
                info = 0
                break
        return SolveResult(x, info, certificate, n_matvec, float(phibar), iteration + 1)


class NystromPreconditioner(LinearOperator):
    """Inverse of a randomized Nyström preconditioner, symmetric positive definite.

    Represents

    .. math::

        P^{-1} = U \\,\\mathrm{diag}\\!\\left(\\frac{\\rho + \\mu}{|\\lambda_i| + \\mu}
        \\right) U^T + (I - U U^T),

    where :math:`U \\Lambda U^T` is a low-rank approximation of the operator
    and ρ the magnitude of the eigenvalues it leaves out, so that
    :math:`P^{-1} A` has eigenvalues near :math:`\\pm\\rho` on the range of U
    and those of A elsewhere. Every weight is positive, so :math:`P^{-1}` is
    symmetric positive definite whatever the signs of the :math:`\\lambda_i`.

    Parameters
    ----------
    U : ndarray, shape (n, r)
        Orthonormal approximate eigenvectors.
    eigenvalues : ndarray, shape (r,)
        The approximate eigenvalues :math:`\\lambda_i` (any sign, nonzero).
    tail : float
        ρ > 0, e.g. the largest magnitude among the eigenvalues not in U.
    shift : float
        μ ≥ 0, the regularisation of :math:`(A + \\mu I) x = b`.
    """

    def __init__(self, U, eigenvalues, tail, shift=0.0):
        super().__init__(dtype=np.float64, shape=(U.shape[0], U.shape[0]))
        self.U = U
        self.eigenvalues = eigenvalues
        self.tail = tail
        self.shift = shift
        self._weights_minus_one = (tail + shift) / (np.abs(eigenvalues) + shift) - 1.0

    def _matmat(self, X):
        return X + self.U @ (self._weights_minus_one[:, None] * (self.U.T @ X))

    def _matvec(self, x):
        return x + self.U @ (self._weights_minus_one * (self.U.T @ x))

    def _adjoint(self):
        return self


def _iv_nystrom(A, rank, oversample, shift, rng):
    A, n = _checks.square_operator(A)
    rank = _checks.positive_integer(rank, "rank", upper=n, upper_text=f"n = {n}")
    oversample = _checks.nonnegative_integer(oversample, "oversample")
    shift = _checks.nonnegative_real(shift, "shift")
    return A, n, rank, oversample, shift, _checks.generator(rng)


def nystrom_preconditioner(A, rank, *, oversample=10, shift=0.0, rng=None):
    """Build a randomized Nyström preconditioner of a symmetric operator.

    Frangella, Tropp and Udell's construction [1]_, made safe for indefinite
    operators: one batched product :math:`Y = A\\Omega` with an orthonormal
    random :math:`\\Omega` of ``l = rank + oversample`` columns, the stability
    shift :math:`\\nu = \\sqrt{n}\\,\\epsilon\\,\\|Y\\|`, and the Nyström
    approximation :math:`Y_\\nu (\\Omega^T Y_\\nu)^{+} Y_\\nu^T` of
    :math:`A + \\nu I`, whose core is inverted through its eigenvalues (not a
    Cholesky factor, which fails when A is indefinite). The `rank`
    eigenpairs of largest magnitude, with ν removed, define a
    :class:`NystromPreconditioner`, built from :math:`|\\lambda_i|` so that
    it is positive definite; the largest magnitude of the sketch's other
    eigenvalues is its tail level ρ (Frangella et al. use the smallest
    sketched eigenvalue, which leaves :math:`P^{-1}A` with condition number
    :math:`\\lambda_r / \\lambda_n` when the spectrum has a gap after r).

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator.
    rank : int
        Rank r of the approximation, ``0 < rank <= n``.
    oversample : int, optional
        Extra sketch columns (``l = min(rank + oversample, n)``).
    shift : float, optional
        μ ≥ 0 in :class:`NystromPreconditioner`; use the regularisation of
        the system when solving :math:`(A + \\mu I) x = b`.
    rng : int or numpy.random.Generator, optional
        Seed or generator for Ω; the draw is the same on every MPI rank.

    Returns
    -------
    NystromPreconditioner
        A ``LinearOperator`` applying :math:`P^{-1}`, to pass as ``M``.

    References
    ----------
    .. [1] Z. Frangella, J. A. Tropp, M. Udell, "Randomized Nyström
       preconditioning", SIAM J. Matrix Anal. Appl. 44(2), 2023
       (arXiv:2110.02820, 2021).

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop.solve import nystrom_preconditioner
    >>> A = np.diag(np.r_[1e4, 1e3, 1e2, np.ones(20)])
    >>> P = nystrom_preconditioner(A, 3, oversample=5, rng=0)
    >>> w = np.linalg.eigvals(P @ A).real  # A alone: condition number 1e4
    >>> bool(w.max() / w.min() < 1.5)
    True
    """
    with _checks.collective(
        A, "nystrom_preconditioner", rank=rank, oversample=oversample, shift=shift, rng=rng
    ):
        A, n, rank, oversample, shift, rng = _iv_nystrom(A, rank, oversample, shift, rng)
        return NystromPreconditioner(*_nystrom(A, n, rank, oversample, rng), shift)


def _nystrom(A, n, rank, oversample, rng):
    width = min(rank + oversample, n)
    omega = _checks.orthonormal_columns(_mpi.draw(rng, (n, width), _checks.communicator(A)))
    Y = np.asarray(A.matmat(omega), dtype=np.float64)
    nu = np.sqrt(n) * np.finfo(np.float64).eps * np.linalg.norm(Y, 2)
    Y_nu = Y + nu * omega
    core = omega.T @ Y_nu
    theta, W = np.linalg.eigh(0.5 * (core + core.T))
    keep = np.abs(theta) > width * np.finfo(np.float64).eps * np.abs(theta).max(initial=0.0)
    # Y_ν C⁺ Y_νᵀ = B S Bᵀ with B = Y_ν W |Θ|^(-1/2), S = sign(Θ).
    B = (Y_nu @ W[:, keep]) / np.sqrt(np.abs(theta[keep]))
    Q, R = np.linalg.qr(B)
    small = (R * np.sign(theta[keep])) @ R.T
    eigenvalues, Z = np.linalg.eigh(0.5 * (small + small.T))
    eigenvalues = eigenvalues - nu
    magnitudes = np.abs(eigenvalues)
    order = np.argsort(-magnitudes, kind="stable")
    # Directions of (numerically) zero eigenvalue carry no information; the
    # identity part of the preconditioner treats them.
    order = order[magnitudes[order] > 1e-12 * magnitudes.max(initial=0.0)]
    if order.size == 0:
        return np.zeros((n, 0)), np.zeros(0), 1.0
    kept, left_out = order[:rank], order[rank:]
    tail = magnitudes[left_out[0]] if left_out.size else magnitudes[kept[-1]]
    return Q @ Z[:, kept], eigenvalues[kept], tail


def pcg(
    A,
    b,
    rank=10,
    oversample=10,
    *,
    x0=None,
    rtol=1e-5,
    atol=0.0,
    maxiter=None,
    shift=0.0,
    callback=None,
    rng=None,
):
    """Solve ``A x = b`` by CG with a randomized Nyström preconditioner.

    Builds :func:`nystrom_preconditioner` ``(A, rank, oversample=...)`` with
    one batched product of ``rank + oversample`` columns, then runs
    :func:`cg` with it, including the stop on negative curvature. When the
    spectrum of a positive definite A has ``rank`` large outlying
    eigenvalues (typical of neural-network Hessians), the preconditioned
    operator's condition number is about :math:`\\lambda_{rank}/\\lambda_n`
    instead of :math:`\\lambda_1/\\lambda_n`, and CG needs far fewer
    iterations.

    Collective over ``A.comm`` when `A` has one.

    Parameters
    ----------
    A : LinearOperator, Hessian, ndarray or sparse array, shape (n, n)
        Real symmetric operator; may be indefinite.
    b : ndarray, shape (n,) or (n, 1)
        Right-hand side (not modified).
    rank : int, optional
        Rank of the Nyström approximation, ``0 < rank <= n``.
    oversample : int, optional
        Extra sketch columns. The seed's ``pCG(b, k, p)`` is
        ``pcg(A, b, rank=k, oversample=p)``.
    x0, rtol, atol, maxiter, callback
        As in :func:`cg`.
    shift : float, optional
        μ ≥ 0 of :func:`nystrom_preconditioner`.
    rng : int or numpy.random.Generator, optional
        Seed or generator for the sketch.

    Returns
    -------
    SolveResult
        As :func:`cg`; ``n_matvec`` includes the ``min(rank + oversample, n)``
        products of the sketch.

    Examples
    --------
    >>> import numpy as np
    >>> import tfhess_linop as thl
    >>> A = np.diag(np.r_[np.logspace(2, 6, 10), np.linspace(1.0, 2.0, 200)])
    >>> b = np.ones(210)
    >>> plain = thl.cg(A, b, rtol=1e-10)
    >>> preconditioned = thl.pcg(A, b, rank=10, oversample=5, rtol=1e-10, rng=0)
    >>> np.allclose(preconditioned.x, b / np.diag(A))
    True
    >>> bool(preconditioned.n_iter < plain.n_iter)
    True
    """
    with _checks.collective(
        A,
        "pcg",
        b=b,
        rank=rank,
        oversample=oversample,
        x0=x0,
        rtol=rtol,
        atol=atol,
        maxiter=maxiter,
        shift=shift,
        callback=callback,
        rng=rng,
    ):
        A, n, rank, oversample, shift, rng = _iv_nystrom(A, rank, oversample, shift, rng)
        A, b, x0, tol, maxiter, _ = _iv_system(A, b, x0, rtol, atol, maxiter, None, 10)
        M = NystromPreconditioner(*_nystrom(A, n, rank, oversample, rng), shift)
        sketch_products = min(rank + oversample, n)
        return _conjugate_gradient(A, b, x0, tol, maxiter, M, callback, sketch_products)
