"""Spectral density by stochastic Lanczos quadrature, all probes in one block."""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
from scipy.linalg import eigh_tridiagonal

from .._checks import collective, generator, integer_at_least
from .._linalg import single_threaded_blas
from ._common import as_square_operator, check_distribution, draw_probes
from ._lanczos import batched_lanczos

__all__ = ["SpectralDensity", "spectral_density"]


# Grid points evaluated at once when smoothing (bounds the temporary array).
_GRID_CHUNK = 256


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralDensity:
    r"""Result of `spectral_density`: a quadrature of the spectrum of `A`.

    The quadrature of probe :math:`p` puts weight ``weights[p, j]`` at node
    ``nodes[p, j]``; averaged over probes it estimates the spectral measure
    :math:`\frac1n \sum_k \delta_{\lambda_k}` of `A`.

    Attributes
    ----------
    nodes : ndarray, shape (num_probes, m)
        Ritz values of each probe's Lanczos run, ascending along each row. A
        run that found an invariant subspace after ``num_steps[p] < m`` steps
        has its row padded with copies of its largest Ritz value, of weight 0.
    weights : ndarray, shape (num_probes, m)
        Gauss quadrature weights (squared first components of the Ritz
        vectors); each row sums to 1.
    grid : ndarray, shape (grid_size,)
        Equally spaced points covering the nodes with a margin of ``5 * sigma``.
    density : ndarray, shape (grid_size,)
        Gaussian-smoothed spectral density on `grid`; it integrates to 1
        (multiply by `n` for an eigenvalue count density).
    sigma : float
        Standard deviation of the Gaussian smoothing kernel.
    ritz_min, ritz_max : float
        Smallest and largest Ritz value over all probes: estimates of the
        extreme eigenvalues of `A` (from inside the spectrum).
    n : int
        Size of `A`.
    num_steps : ndarray of int, shape (num_probes,)
        Lanczos steps made for each probe.
    num_matvecs : int
        Number of products with `A` (columns passed to ``A.matmat``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    ritz_min: float
    ritz_max: float
    n: int
    num_steps: np.ndarray
    num_matvecs: int

    @property
    def num_probes(self):
        """Number of probe vectors."""
        return self.nodes.shape[0]

    def evaluate(self, x, sigma=None):
        r"""Smoothed density at the points `x`, with another kernel width if given.

        Parameters
        ----------
        x : array_like
            Points at which to evaluate the density.
        sigma : float, optional
            Standard deviation of the Gaussian kernel; default `self.sigma`.

        Returns
        -------
        ndarray, shape of `x`
            :math:`\frac1P \sum_{p,j} w_{pj}\, \mathcal N(x; \theta_{pj},
            \sigma^2)`.
        """
        sigma = self.sigma if sigma is None else _check_sigma(sigma)
        return _smoothed_density(self.nodes, self.weights, np.asarray(x), sigma)

    def moment(self, order):
        r"""Estimate :math:`\frac1n \operatorname{tr}(A^k)` for ``k = order``.

        The quadrature of each probe is exact for polynomials of degree below
        twice its number of steps, so this is Hutchinson's estimator of
        :math:`\operatorname{tr}(A^k)/n` with the normalised probes. ``n *
        moment(1)`` estimates the trace.

        Parameters
        ----------
        order : int
            The power :math:`k \ge 0`.

        Returns
        -------
        float
        """
        order = integer_at_least(order, "order", 0)
        return float(np.mean(np.sum(self.weights * self.nodes**order, axis=1)))

    def to_dict(self):
        """Plain-Python dictionary of every field (JSON-serialisable)."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def __repr__(self):
        return (
            f"SpectralDensity(n={self.n}, num_probes={self.num_probes}, "
            f"num_steps={int(self.num_steps.max())}, ritz_min={self.ritz_min!r}, "
            f"ritz_max={self.ritz_max!r}, sigma={self.sigma!r}, "
            f"grid_size={self.grid.size}, num_matvecs={self.num_matvecs})"
        )


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_sigma(sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"`sigma` must be a positive number, got {type(sigma).__name__}.")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be positive and finite, got {sigma}.")
    return float(sigma)


def _iv_spectral_density(A, num_probes, num_steps, grid_size, sigma, rng, distribution):
    A, n, comm = as_square_operator(A)
    if n == 0:
        raise ValueError("`A` must have at least one row, got shape (0, 0).")
    num_probes = integer_at_least(num_probes, "num_probes", 1)
    num_steps = integer_at_least(num_steps, "num_steps", 1)
    grid_size = integer_at_least(grid_size, "grid_size", 2)
    if sigma is not None:
        sigma = _check_sigma(sigma)
    distribution = check_distribution(distribution, ("rademacher", "normal"))
    return (
        A,
        n,
        comm,
        num_probes,
        num_steps,
        grid_size,
        sigma,
        generator(rng),
        distribution,
    )


def spectral_density(
    A,
    num_probes=10,
    num_steps=80,
    *,
    grid_size=1000,
    sigma=None,
    rng=None,
    distribution="rademacher",
):
    r"""Estimate the spectral density of a symmetric operator by Lanczos quadrature.

    Collective over `comm` (the ``A.comm`` attribute, if any): every rank
    draws the same probes and returns the same result.

    Parameters
    ----------
    A : LinearOperator, ndarray or sparse matrix, shape (n, n)
        The symmetric operator; only ``A.matmat`` is used.
    num_probes : int, optional
        Number of random start vectors (Lanczos runs).
    num_steps : int, optional
        Lanczos steps per run (capped at n): the number of quadrature nodes
        per probe.
    grid_size : int, optional
        Number of points of the grid on which the density is returned.
    sigma : float, optional
        Standard deviation of the Gaussian smoothing kernel. Default:
        ``(ritz_max - ritz_min) / min(num_steps, n)``, about the spacing of the
        quadrature nodes, i.e. the resolution of `num_steps` Lanczos steps
        (1e-3 times the largest absolute Ritz value, or 1e-3, when all Ritz
        values coincide).
    rng : None, int, SeedSequence or numpy.random.Generator, optional
        Source of the start vectors.
    distribution : {"rademacher", "normal"}, optional
        Entries of the start vectors before normalisation.

    Returns
    -------
    SpectralDensity
        Nodes and weights of each probe's quadrature, the smoothed density on
        a grid, and the extreme Ritz values; see `SpectralDensity` (it has
        ``to_dict()``, ``moment(k)`` and ``evaluate(x, sigma)``).

    See Also
    --------
    plot_spectral_density : Draw the result on a logarithmic scale.
    eigsh : Accurate extreme eigenvalues.

    Notes
    -----
    For a unit start vector :math:`q` with :math:`\mathbb E[qq^\top] = I/n`,
    :math:`q^\top f(A) q = \sum_k (q^\top u_k)^2 f(\lambda_k)` is an unbiased
    estimate of :math:`\frac1n \sum_k f(\lambda_k)`. After :math:`m` Lanczos
    steps from :math:`q`, with tridiagonal :math:`T_m = V\Theta V^\top`, the
    Gauss quadrature :math:`\sum_j \tau_j^2 f(\theta_j)`, :math:`\tau_j =
    V_{1j}`, reproduces :math:`q^\top f(A) q` exactly for polynomials of
    degree below :math:`2m` [1]_. Averaging over :math:`P` probes and
    replacing each node by a Gaussian of width :math:`\sigma` gives the
    smoothed density [2]_, [3]_

    .. math:: \phi_\sigma(t) = \frac1P \sum_{p=1}^P \sum_{j=1}^m
              \tau_{pj}^2 \frac{1}{\sigma\sqrt{2\pi}}
              e^{-(t - \theta_{pj})^2 / (2\sigma^2)} .

    All :math:`P` runs advance together: each step is one ``A.matmat`` call
    with (at most) :math:`P` columns, so a batched operator does the work of
    :math:`P` matvecs at once. Orthogonality is kept by partial
    reorthogonalisation [4]_: a recurrence on the tridiagonal entries
    estimates the loss of orthogonality of each new Lanczos vector, and only
    when it exceeds :math:`\sqrt{\varepsilon}` is the vector orthogonalised
    (twice if needed) against all previous vectors of its run, and once more
    at the next step. The basis stays orthogonal to :math:`\sqrt\varepsilon`,
    which keeps the Ritz values free of spurious copies and the nodes and
    weights those of full reorthogonalisation to working precision, at a
    fraction of its :math:`O(nPm^2)` operations (half of the steps on a
    spectrum with far outliers, fewer otherwise). The :math:`P (m + 1)`
    vectors of length n are stored, step by step in (P, n) blocks: each
    product is written into the next block and the three-term recurrence
    runs there in place. A run stops early when its Krylov space
    is invariant (it then holds every eigenvalue its start vector sees).

    The extreme Ritz values converge to the extreme eigenvalues quickly, from
    inside the spectrum; weights are random, so the density of eigenvalues of
    small multiplicity (outliers) is only estimated to within a factor of
    order one by a few probes.

    References
    ----------
    .. [1] G. H. Golub and G. Meurant, "Matrices, Moments and Quadrature with
       Applications", Princeton University Press, 2010.
    .. [2] B. Ghorbani, S. Krishnan and Y. Xiao, "An investigation into neural
       net optimization via Hessian eigenvalue density", Proceedings of the
       36th International Conference on Machine Learning (ICML), PMLR 97,
       2232-2241, 2019.
    .. [3] V. Papyan, "Traces of class/cross-class structure pervade deep
       learning spectra", Journal of Machine Learning Research 21(252), 1-64,
       2020.
    .. [4] H. D. Simon, "The Lanczos algorithm with partial
       reorthogonalization", Mathematics of Computation 42(165), 115-142,
       1984.

    Examples
    --------
    >>> import numpy as np
    >>> from tfhess_linop import spectral_density
    >>> rng = np.random.default_rng(0)
    >>> eigenvalues = np.concatenate([rng.uniform(0.0, 1.0, 195), [5, 6, 7, 8, 9]])
    >>> U, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    >>> A = (U * eigenvalues) @ U.T
    >>> result = spectral_density(A, num_probes=8, num_steps=40, rng=1)
    >>> result.nodes.shape, result.weights.shape
    ((8, 40), (8, 40))
    >>> bool(np.isclose(result.ritz_max, 9.0))
    True
    >>> bool(abs(result.moment(1) - eigenvalues.mean()) < 0.2)
    True
    """
    with (
        collective(
            A,
            "spectral_density",
            num_probes=num_probes,
            num_steps=num_steps,
            grid_size=grid_size,
            sigma=sigma,
            rng=rng,
            distribution=distribution,
        ),
        single_threaded_blas(),
    ):
        A, n, comm, num_probes, num_steps, grid_size, sigma, rng, distribution = (
            _iv_spectral_density(A, num_probes, num_steps, grid_size, sigma, rng, distribution)
        )
        starts = draw_probes(rng, n, num_probes, comm, distribution).T
        num_steps = min(num_steps, n)
        diagonals, off_diagonals, steps = batched_lanczos(A, starts, num_steps)
        nodes, weights = _gauss_quadrature(diagonals, off_diagonals, steps)
        ritz_min, ritz_max = float(nodes.min()), float(nodes.max())
        if sigma is None:
            width = ritz_max - ritz_min
            if width > 0:
                sigma = width / num_steps
            else:
                sigma = 1e-3 * max(abs(ritz_max), 1.0)
        grid = np.linspace(ritz_min - 5 * sigma, ritz_max + 5 * sigma, grid_size)
        return SpectralDensity(
            nodes=nodes,
            weights=weights,
            grid=grid,
            density=_smoothed_density(nodes, weights, grid, sigma),
            sigma=float(sigma),
            ritz_min=ritz_min,
            ritz_max=ritz_max,
            n=n,
            num_steps=steps,
            num_matvecs=int(steps.sum()),
        )


def _gauss_quadrature(diagonals, off_diagonals, steps):
    """Nodes and weights of each run's Gauss quadrature, padded to a common length."""
    num_probes = diagonals.shape[0]
    length = int(steps.max())
    nodes = np.empty((num_probes, length))
    weights = np.zeros((num_probes, length))
    for p, k in enumerate(steps):
        if k == 1:
            theta, vectors = diagonals[p, :1], np.ones((1, 1))
        else:
            theta, vectors = eigh_tridiagonal(diagonals[p, :k], off_diagonals[p, : k - 1])
        nodes[p, :k] = theta
        nodes[p, k:] = theta[-1]
        weights[p, :k] = vectors[0] ** 2
    return nodes, weights


def _smoothed_density(nodes, weights, x, sigma):
    """Average over probes of the weighted Gaussians centred at the nodes, at `x`."""
    x = np.asarray(x, dtype=np.float64)
    flat_x = x.reshape(-1)
    centres = nodes.reshape(-1)
    masses = weights.reshape(-1) / nodes.shape[0]
    density = np.empty(flat_x.shape)
    normalisation = 1.0 / (sigma * np.sqrt(2 * np.pi))
    for start in range(0, flat_x.size, _GRID_CHUNK):
        chunk = flat_x[start : start + _GRID_CHUNK]
        z = (chunk[:, None] - centres[None, :]) / sigma
        density[start : start + _GRID_CHUNK] = np.exp(-0.5 * z**2) @ masses
    return (density * normalisation).reshape(x.shape)
