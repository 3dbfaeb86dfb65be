"""The figure of ``tfhess-linop spectrum --plot``: extreme eigenvalues, and the density."""

from __future__ import annotations

__all__ = ["write_figure"]

_COLORS = {"largest": "C0", "smallest": "C3"}


def write_figure(path, result, density=None):
    """Draw the eigenvalues of `result` (and the SLQ `density`) into the PNG file `path`.

    With a density, the upper panel shows it on a logarithmic scale with the
    Lanczos eigenvalues marked where they lie in the spectrum; the lower
    panel (the only one without) lists the eigenvalues as bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (name, position, value)
        for name, entry in result["eigenvalues"].items()
        for position, value in enumerate(entry["values"], start=1)
    ]
    bar_height = 1.0 + 0.32 * len(bars)
    if density is None:
        figure, bar_axes = plt.subplots(figsize=(7.5, 1.1 + bar_height))
    else:
        figure, (density_axes, bar_axes) = plt.subplots(
            2,
            1,
            figsize=(7.5, 4.6 + bar_height),
            gridspec_kw={"height_ratios": [3.4, bar_height]},
        )
        _draw_density(density_axes, density, result)
    _draw_bars(bar_axes, bars)
    if density is not None:
        # One eigenvalue axis for both panels: the bars under their ticks.
        low, high = bar_axes.get_xlim()
        limits = (min(low, density.grid[0]), max(high, density.grid[-1]))
        bar_axes.set_xlim(limits)
        density_axes.set_xlim(limits)
    hvps = ", ".join(f"{name} {entry['hvp']}" for name, entry in result["eigenvalues"].items())
    figure.suptitle(
        f"Hessian of the loss {result['loss'] or 'of the model'}: {result['n_parameters']} "
        f"parameters, {result['n_samples']} samples\n"
        f"Lanczos Hessian-vector products: {hvps}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _draw_density(ax, density, result):
    from .estimators import plot_spectral_density

    plot_spectral_density(density, ax, mark_extremes=False, color="0.25", label="SLQ density")
    # Ticks of the Lanczos eigenvalues along the bottom of the panel.
    for name, entry in result["eigenvalues"].items():
        for i, value in enumerate(entry["values"]):
            ax.axvline(
                value,
                ymax=0.12,
                color=_COLORS[name],
                linewidth=1.6,
                label=f"Lanczos, {name} {len(entry['values'])}" if i == 0 else None,
            )
    ax.set_title(
        f"spectral density (SLQ, {density.num_probes} probes × "
        f"{int(density.num_steps.max())} steps)",
        fontsize=10,
    )
    # Room above the curve for the legend.
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 40)
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)


def _draw_bars(ax, bars):
    values = [value for _, _, value in bars]
    rows = range(len(bars))[::-1]
    ax.barh(rows, values, color=[_COLORS[name] for name, _, _ in bars], height=0.6)
    span = max(abs(v) for v in values) or 1.0
    for row, value in zip(rows, values, strict=True):
        ax.annotate(
            f"{value:.4g}",
            (value, row),
            xytext=(4 if value >= 0 else -4, 0),
            textcoords="offset points",
            va="center",
            ha="left" if value >= 0 else "right",
            fontsize=8,
        )
    ax.set_yticks(list(rows), [f"{name} #{position}" for name, position, _ in bars])
    # Room for the labels on the side where bars end.
    low = min(values) - 0.3 * span if min(values) < 0 else -0.05 * span
    high = max(values) + 0.3 * span if max(values) > 0 else 0.05 * span
    ax.set_xlim(low, high)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.axvline(0.0, color="0.4", linewidth=0.8)
    ax.set_xlabel("eigenvalue")
    ax.set_title("extreme eigenvalues (Lanczos)", fontsize=10)
