"""Drawing a spectral density (matplotlib is an optional dependency)."""

from __future__ import annotations

import numbers

import numpy as np

from .density import SpectralDensity

__all__ = ["plot_spectral_density"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plot_spectral_density needs matplotlib, which is not installed; "
            "install it with `pip install matplotlib` or `pip install "
            "'tfhess-linop[plot]'`."
        ) from exc
    return plt


def _iv_plot_spectral_density(result, dynamic_range):
    if not isinstance(result, SpectralDensity):
        raise TypeError(
            "`result` must be the SpectralDensity returned by spectral_density, "
            f"got {type(result).__name__}."
        )
    if isinstance(dynamic_range, bool) or not isinstance(dynamic_range, numbers.Real):
        raise TypeError(
            f"`dynamic_range` must be a number above 1, got {type(dynamic_range).__name__}."
        )
    if not (np.isfinite(dynamic_range) and dynamic_range > 1):
        raise ValueError(f"`dynamic_range` must be a number above 1, got {dynamic_range}.")
    return result, float(dynamic_range)


def plot_spectral_density(result, ax=None, *, mark_extremes=True, dynamic_range=1e8, **line_kwargs):
    """Draw a spectral density on a logarithmic scale, marking the extreme eigenvalues.

    Parameters
    ----------
    result : SpectralDensity
        What `spectral_density` returned.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default: the current axes of pyplot.
    mark_extremes : bool, optional
        Draw dashed vertical lines, labelled with their values, at the
        smallest and largest Ritz values (the estimates of the extreme
        eigenvalues).
    dynamic_range : float, optional
        The vertical axis spans ``[max(density) / dynamic_range,
        2 * max(density)]``; lower values (the kernel's tails) are cut off.
    **line_kwargs
        Passed to ``ax.plot`` for the density curve (e.g. ``color``,
        ``label``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from tfhess_linop import plot_spectral_density, spectral_density
    >>> result = spectral_density(np.diag(np.arange(1.0, 51.0)), 4, 20, rng=0)
    >>> ax = plot_spectral_density(result)
    >>> ax.get_yscale()
    'log'
    """
    result, dynamic_range = _iv_plot_spectral_density(result, dynamic_range)
    plt = _pyplot()
    if ax is None:
        ax = plt.gca()
    line_kwargs.setdefault("color", "C0")
    line_kwargs.setdefault("label", "SLQ density")
    top = float(result.density.max())
    bottom = top / dynamic_range
    ax.plot(result.grid, np.maximum(result.density, bottom / 10), **line_kwargs)
    ax.set_yscale("log")
    ax.set_ylim(bottom, 2 * top)
    ax.set_xlim(result.grid[0], result.grid[-1])
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(
        f"Spectral density (SLQ: {result.num_probes} probes x "
        f"{int(result.num_steps.max())} steps, sigma = {result.sigma:.3g})"
    )
    if mark_extremes:
        for value, name, align in (
            (result.ritz_min, "min", "left"),
            (result.ritz_max, "max", "right"),
        ):
            ax.axvline(value, color="C3", linestyle="--", linewidth=1)
            ax.annotate(
                f"λ{name} ≈ {value:.4g}",
                xy=(value, 0.98),
                xycoords=("data", "axes fraction"),
                xytext=(3 if align == "left" else -3, 0),
                textcoords="offset points",
                ha=align,
                va="top",
                color="C3",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    return ax
