"""Keras-facing extras: `CurvatureMonitor`, the Hessian's spectrum logged during training."""

from __future__ import annotations

import math
import time
import warnings

import keras
import numpy as np

from . import _checks, _mpi
from ._progress import BudgetSpent, CountedOperator, progress_bar
from ._thick_restart import products_bound

__all__ = ["CurvatureMonitor"]

_UNITS = ("epoch", "step")
# Lanczos vectors beyond the k wanted ones, as `tfhess_linop.eigsh` chooses.
_EXTRA_LANCZOS_VECTORS = 15


class CurvatureMonitor(keras.callbacks.Callback):
    r"""Log the Hessian's extreme eigenvalues and trace while a Keras model trains.

    Every `every` epochs (or steps) the callback takes the Hessian of the
    objective the model was compiled to train -- ``model.compute_loss`` on
    the data given here, as :meth:`tfhess_linop.Hessian.from_keras` with
    ``loss=None`` -- at the current weights, and adds to the epoch's
    ``logs``: the `k` largest eigenvalues (:func:`tfhess_linop.eigsh`) as
    ``hessian_eig_1`` (the largest, the "sharpness"), ``hessian_eig_2``,
    ...; the trace by Hutch++ (:func:`tfhess_linop.hutchpp_trace`) as
    ``hessian_trace``; and, with `smallest`, the smallest eigenvalue as
    ``hessian_eig_min``. The logs are what ``History``, ``CSVLogger`` and
    ``TensorBoard`` record, so the values land there too; list the monitor
    before those callbacks in ``fit(callbacks=[...])``.

    It does not change training: the Hessian is evaluated in inference mode
    (``training=False``), restores any state a call touches, draws its
    random vectors from its own NumPy generators with fixed seeds (never
    from TensorFlow's or Keras' random streams), and leaves weights and
    optimizer alone, so a fit with the monitor gives bit-identical weights
    to one without.

    Collective over `comm`: under MPI every rank passes its data (its shard,
    or the full data with ``shard=True``), every rank runs the same fit, and
    every rank logs the same values.

    Parameters
    ----------
    x : array_like, nest, DataFrame, tf.data.Dataset or keras.utils.PyDataset
        The data the Hessian is taken on (held-out data, or a fixed subset
        of the training data), as for `tfhess_linop.Hessian.from_keras`; a dataset
        must be finite.
    y : array_like or nest of array_like, optional
        Targets (not with a dataset).
    sample_weight : array_like or nest, optional
        Per-sample weights.
    k : int, default: 1
        Number of largest eigenvalues.
    smallest : bool, default: False
        Also log the smallest eigenvalue (``hessian_eig_min``): negative
        curvature.
    trace : bool, default: True
        Log the Hutch++ trace estimate (``hessian_trace``).
    trace_matvecs : int, default: 30
        Hessian-vector products for the trace, at least 4; with as many as
        parameters, the trace is exact.
    max_hvps : int, default: 300
        Budget of Hessian-vector products per evaluation. The trace takes
        `trace_matvecs`; each eigenvalue solve gets an equal share of the
        rest, which bounds its Lanczos restarts. A solve that has not
        converged to `tol` within its share logs NaN for the eigenvalues it
        did not find and warns.
    tol : float, default: 1e-6
        Relative accuracy of the eigenvalues' Ritz residuals, as for `tfhess_linop.eigsh`
        (the eigenvalues themselves are accurate to about its square).
    every : int, default: 1
        Evaluate every `every` epochs (after epochs `every`, 2 `every`, ...)
        or every `every` training steps, counted across epochs.
    unit : {"epoch", "step"}, default: "epoch"
        What `every` counts. With "epoch", the epochs in between log NaN,
        so that every epoch has the same keys (``CSVLogger`` fixes its
        columns at the first epoch). With "step", each epoch logs the latest
        evaluation (NaN before the first), and `records` holds all of them.
    batch_size : int, optional
        Samples per forward pass (memory only; the Hessian is that of all the
        data).
    comm : mpi4py communicator, optional
        Distribute the data over the ranks of `comm`.
    shard : bool, default: True
        With `comm`: `x`, `y` are the full data and each rank keeps its
        share; False means each rank passes its own shard.
    seed : int, default: 0
        Seed of the Hutch++ probes; the same probes are used at every
        evaluation, so that changes of the logged trace come from the
        weights, not from the probes.
    prefix : str, default: "hessian"
        First part of the log keys.
    verbose : bool, default: False
        Show a progress bar (on rank 0) while an evaluation runs.

    Attributes
    ----------
    records : list of dict
        One entry per evaluation: ``epoch`` (0-based), ``step`` (training
        steps so far), ``eigenvalues`` (largest first), ``eig_min``,
        ``trace``, ``trace_standard_error``, ``hvps`` (products spent) and
        ``seconds``.
    hessian : tfhess_linop.Hessian or None
        The Hessian, built when training begins and re-used: it reads the
        model's current weights at every product.

    Raises
    ------
    ValueError, TypeError
        At construction, for arguments out of range or of the wrong type;
        when training begins, for data that do not fit the model or a model
        that is not compiled (as `tfhess_linop.Hessian.from_keras`).

    See Also
    --------
    tfhess_linop.Hessian.from_keras, tfhess_linop.eigsh, tfhess_linop.hutchpp_trace

    Notes
    -----
    An evaluation costs at most `max_hvps` Hessian-vector products (each
    about twice a gradient on the monitor's data), plus one forward pass
    over the data when training begins, and the products are applied one
    vector at a time (the first evaluation compiles the product once). A
    float32 model's Hessian is accurate to about 1e-6 relative.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from tfhess_linop.keras import CurvatureMonitor
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((64, 3)), rng.standard_normal((64, 1))
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, dtype="float64")])
    >>> model.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError(dtype="float64"))
    >>> monitor = CurvatureMonitor(x[:32], y[:32], k=2, trace_matvecs=4)
    >>> history = model.fit(x, y, epochs=2, callbacks=[monitor], verbose=0)
    >>> sorted(k for k in history.history if k.startswith("hessian"))
    ['hessian_eig_1', 'hessian_eig_2', 'hessian_trace']

    For a linear model and the mean squared error, the Hessian is
    :math:`\frac2N [x\ 1]^\top [x\ 1]`, whatever the weights:

    >>> X1 = np.hstack([x[:32], np.ones((32, 1))])
    >>> exact = np.linalg.eigvalsh(2 * X1.T @ X1 / 32)
    >>> bool(np.allclose(history.history["hessian_eig_1"], exact[-1]))
    True
    >>> bool(np.allclose(history.history["hessian_trace"], exact.sum()))
    True
    """

    def __init__(
        self,
        x,
        y=None,
        *,
        sample_weight=None,
        k=1,
        smallest=False,
        trace=True,
        trace_matvecs=30,
        max_hvps=300,
        tol=1e-6,
        every=1,
        unit="epoch",
        batch_size=None,
        comm=None,
        shard=True,
        seed=0,
        prefix="hessian",
        verbose=False,
    ):
        super().__init__()
        if x is None:
            raise ValueError("`x` must hold the data to take the Hessian on, got None.")
        self.k = _checks.positive_integer(k, "k")
        self.smallest = _flag(smallest, "smallest")
        self.trace = _flag(trace, "trace")
        self.trace_matvecs = _checks.integer_at_least(
            trace_matvecs, "trace_matvecs", 4, " for Hutch++"
        )
        self.max_hvps = _checks.positive_integer(max_hvps, "max_hvps")
        self.tol = _checks.nonnegative_real(tol, "tol")
        self.every = _checks.positive_integer(every, "every")
        self.unit = _checks.choice(unit, "unit", _UNITS)
        self.batch_size = _checks.optional_positive_integer(batch_size, "batch_size")
        self.shard = _flag(shard, "shard")
        self.seed = _checks.nonnegative_integer(seed, "seed")
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"`prefix` must be a non-empty string, got {prefix!r}.")
        self.prefix = prefix
        self.verbose = _flag(verbose, "verbose")
        solves = 1 + self.smallest
        spare = self.max_hvps - (self.trace_matvecs if self.trace else 0)
        # The least basis a solve gets, 2k + 1 Lanczos vectors (eigsh's default
        # ncv is never smaller): its first basis alone takes that many.
        needed = solves * (2 * self.k + 1)
        if spare < needed:
            raise ValueError(
                f"`max_hvps` = {self.max_hvps} leaves {spare} products for the eigenvalues "
                f"after the trace's {self.trace_matvecs if self.trace else 0}; at least "
                f"{needed} are needed ({solves} Lanczos solve(s) for k = {self.k})."
            )
        self._share = spare // solves
        self._data = (x, y, sample_weight)
        self._comm = comm
        self.comm = None
        self.hessian = None
        self._hessian_model = None
        self.records = []
        self._epoch = 0
        self._step = 0
        self._latest = None
        if self.unit == "step":
            # Only then is there work after each step. Keras dispatches the
            # callbacks of a fit asynchronously unless one of them defines a
            # batch hook, so the hook is an attribute of step monitors only.
            self.on_train_batch_end = self._after_step

    @property
    def keys(self):
        """The log keys, in order."""
        names = [f"{self.prefix}_eig_{i}" for i in range(1, self.k + 1)]
        if self.smallest:
            names.append(f"{self.prefix}_eig_min")
        if self.trace:
            names.append(f"{self.prefix}_trace")
        return names

    def on_train_begin(self, logs=None):
        # Built before the first step, so that data that do not fit the model
        # fail at once; built once, since it reads the current weights.
        if self.hessian is None or self._hessian_model is not self.model:
            from .hessian import Hessian

            x, y, sample_weight = self._data
            self.hessian = Hessian.from_keras(
                self.model,
                None,
                x,
                y,
                sample_weight=sample_weight,
                batch_size=self.batch_size,
                comm=self._comm,
                shard=self.shard,
            )
            self.comm = self.hessian.comm
            self._hessian_model = self.model
        if self.k >= self.hessian.n:
            raise ValueError(
                f"`k` must be smaller than the number of parameters, {self.hessian.n}; "
                f"got {self.k}."
            )
        self._step = 0
        self._latest = None

    def _after_step(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self._latest = self._evaluate(self._epoch, f"step {self._step}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.unit == "epoch":
            due = (epoch + 1) % self.every == 0
            values = self._evaluate(epoch, f"epoch {epoch + 1}") if due else None
        else:
            values = self._latest
        if logs is not None:
            logs.update(values or dict.fromkeys(self.keys, math.nan))

    def _evaluate(self, epoch, when):
        """The log values at the current weights, and their record. Collective."""
        from .eigen import eigsh
        from .estimators import hutchpp_trace
        from .linop import as_linop

        H = self.hessian
        # The Hessian follows the weights of this rank; a rank whose training
        # drifted from the others' would silently mix different models.
        H._check_same_parameters()
        started = time.perf_counter()
        show = self.verbose and _mpi.rank(self.comm) == 0
        solves = 1 + self.smallest
        total = solves * self._share + (min(self.trace_matvecs, H.n) if self.trace else 0)
        with progress_bar(f"Hessian at {when}", show=show, total=total) as bar:
            # One vector at a time, as Lanczos applies it anyway: Hutch++'s
            # blocks would trace the vectorised product once more (seconds),
            # which gains little at a monitor's few dozen products.
            A = CountedOperator(as_linop(H), bar, vectorize=False)
            largest = self._eigenvalues(eigsh, A, self.k, "LA")[::-1]
            values = {f"{self.prefix}_eig_{i}": v for i, v in enumerate(largest, start=1)}
            record = {"epoch": epoch, "step": self._step, "eigenvalues": largest}
            if self.smallest:
                (lowest,) = self._eigenvalues(eigsh, A, 1, "SA")
                values[f"{self.prefix}_eig_min"] = lowest
                record["eig_min"] = lowest
            if self.trace:
                estimate = hutchpp_trace(A, self.trace_matvecs, rng=self.seed)
                values[f"{self.prefix}_trace"] = float(estimate.estimate)
                record["trace"] = float(estimate.estimate)
                record["trace_standard_error"] = float(estimate.standard_error)
        record["hvps"] = A.count
        record["seconds"] = time.perf_counter() - started
        self.records.append(record)
        return values

    def _eigenvalues(self, eigsh, A, k, which):
        """`k` eigenvalues at end `which` within this solve's share of products.

        The number of Lanczos vectors and of restarts are chosen so that
        the solver's products fit the share (`_arpack_products`); should it
        ask for more, the solve stops there and logs NaN. The thick-restart
        solver tests convergence after every product, so a basis as large as
        the share costs nothing when it converges sooner.
        """
        from scipy.sparse.linalg import ArpackNoConvergence

        n, share = A.shape[0], self._share
        ncv = min(n, max(2 * k + 1, k + _EXTRA_LANCZOS_VECTORS), share)
        ncv = max(ncv, k + 1)
        maxiter = 1
        while _arpack_products(k, ncv, maxiter + 1) <= share:
            maxiter += 1
        found, A.limit = np.array([]), A.count + share
        try:
            values = eigsh(
                A,
                k=k,
                which=which,
                ncv=ncv,
                maxiter=maxiter,
                tol=self.tol,
                return_eigenvectors=False,
            )
            return [float(v) for v in np.sort(values)]
        except ArpackNoConvergence as exc:
            found = np.sort(np.asarray(exc.eigenvalues, dtype=np.float64).real)
        except BudgetSpent:
            pass
        finally:
            A.limit = None
        missing = np.full(k - found.size, np.nan)
        values = np.concatenate([missing, found] if which == "LA" else [found, missing])
        warnings.warn(
            f"CurvatureMonitor: eigsh (which={which!r}) found {found.size} of {k} "
            f"eigenvalues to tol={self.tol:g} within {share} Hessian-vector products; "
            "the others are logged as NaN (raise `max_hvps` or `tol`).",
            RuntimeWarning,
            stacklevel=4,
        )
        return [float(v) for v in values]


def _arpack_products(k, ncv, maxiter):
    """The most products `tfhess_linop.eigsh` takes for "LA"/"SA" (k, ncv, maxiter restarts).

    The bound of its thick-restart Lanczos solver (the name is that of the
    ARPACK bound it replaced): ``ncv`` products for the first basis, then at
    most ``ncv`` minus the Ritz vectors kept per restart.
    """
    return products_bound(k, ncv, maxiter)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)
