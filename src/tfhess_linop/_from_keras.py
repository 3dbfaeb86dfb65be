"""`Hessian.from_keras`: the operator of the objective a Keras model trains.

Construction only: resolve the weights, wrap the data in a `DataSource` and
the compiled loss in a `KerasObjective`, then hand its per-batch
contribution to the common setup of `Hessian`.
"""

from __future__ import annotations

from . import _mpi
from ._keras import keras_variables
from ._objective import KerasObjective
from ._sources import DataSource

__all__ = ["KerasConstruction"]


class KerasConstruction:
    """Mixin of `Hessian`: construction from a Keras model.

    Expects the class to provide ``_setup`` (the construction shared with
    ``__init__``).
    """

    @classmethod
    def from_keras(
        cls,
        model,
        loss=None,
        x=None,
        y=None,
        *,
        sample_weight=None,
        variables=None,
        batch_size=None,
        comm=None,
        shard=True,
        training=False,
        model_losses=True,
        allow_batch_dependence=False,
        check_deterministic=False,
        jit_compile=False,
        mode="auto",
    ):
        """The Hessian of the objective Keras trains, on all the data, w.r.t. the weights.

        The operator is exactly the Hessian of
        ``model.compute_loss(x, y, model(x), sample_weight)`` evaluated on
        all the data as one batch -- what ``model.fit`` minimises: the
        compiled loss of every output (with its ``loss_weights``,
        reduction, masks and sample weights) plus ``model.losses`` (weight
        and activity regularizers, ``add_loss``), or an overridden
        ``compute_loss``. It is the same operator whatever `batch_size` and
        however many ranks hold the data; see the operator guide for how
        each term is split exactly.

        Collective over `comm`. Construction makes one forward pass over
        the data (sample count, loss divisors) and checks, on the first
        samples, that splitting the data into batches does not change the
        objective.

        Parameters
        ----------
        model : keras.Model
            A built model.
        loss : str, keras.losses.Loss, callable or nest of them, optional
            None (default): the loss `model` was compiled with. Otherwise it
            replaces the compiled loss as ``model.compile(loss=loss)``
            would (a name, a loss object with its reduction, a function
            ``loss(y_true, y_pred)`` of per-sample losses, or a nest of them
            per output); ``model.losses`` still count (see `model_losses`).
        x : array_like, nest, DataFrame, tf.data.Dataset or keras.utils.PyDataset
            Inputs: arrays (dicts for named inputs), a pandas DataFrame, or a
            finite dataset yielding ``x``, ``(x, y)`` or ``(x, y,
            sample_weight)``, batched or not; datasets are streamed, one
            batch in memory at a time.
        y : array_like or nest of array_like, optional
            Targets, samples along the first axis (not with a dataset).
        sample_weight : array_like or nest, optional
            Per-sample (or per-timestep) weights, as for ``fit``.
        variables : sequence of variables, layers or layer names, optional
            Take the Hessian block of these parameters only (default: all
            of ``model.trainable_variables``). Layers contribute their
            trainable variables; frozen layers have none.
        batch_size : int, optional
            Samples per forward pass; None passes all (local) samples at
            once. It bounds memory only: it does not change the operator.
        comm : mpi4py communicator, optional
            Distribute the data over the ranks of `comm`.
        shard : bool, default: True
            With `comm`: `x`, `y` are the full data (the same on every rank)
            and each rank keeps its ``numpy.array_split`` shard of the
            samples; of a dataset, rank r of P keeps batches r, r + P,
            r + 2P, ... (round-robin). False means the data already is this
            rank's.
        training : bool, default: False
            Passed to the model call. Non-trainable state that a
            training-mode call updates (BatchNorm statistics) is restored
            after every call.
        model_losses : bool, default: True
            Include ``model.losses`` (weight and activity regularizers,
            ``add_loss`` terms). False leaves them out.
        allow_batch_dependence : bool, default: False
            An objective that is not a sum over samples (BatchNorm in
            training mode, a batch-level loss such as Dice) changes when the
            data is split into batches or ranks; that raises ``ValueError``
            unless this is True, which takes the sum of the batches'
            objectives instead.
        check_deterministic, jit_compile, mode
            As for `Hessian`.

        Returns
        -------
        Hessian

        Raises
        ------
        ValueError, TypeError
            At construction, for data, losses and variables that do not fit
            the model (each message names the argument).

        Notes
        -----
        Keras losses compute in ``floatx``; here they compute in the
        model's dtype (float64 for a float64 model), so a float64 model
        gets the float64 value of the same objective.

        Examples
        --------
        >>> import numpy as np, keras
        >>> import tfhess_linop as thl
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, dtype="float64")])
        >>> x = np.random.default_rng(0).standard_normal((20, 3))
        >>> y = np.ones((20, 1))
        >>> H = thl.Hessian.from_keras(model, "mse", x, y, batch_size=7)
        >>> H.n
        4
        >>> # For a linear model and MSE, H = 2/N [x 1]^T [x 1]:
        >>> X1 = np.hstack([x, np.ones((20, 1))])
        >>> np.allclose(H.dense(), 2 * X1.T @ X1 / 20)
        True
        """
        comm = _mpi.resolve_comm(comm)
        tf_variables = keras_variables(model, variables)
        source = DataSource(
            x, y, sample_weight, batch_size=batch_size, comm=comm, shard=shard, model=model
        )
        objective = KerasObjective(
            model,
            loss,
            source,
            training=training,
            model_losses=model_losses,
            allow_batch_dependence=allow_batch_dependence,
            comm=comm,
        )
        self = cls.__new__(cls)
        self._setup(
            tf_variables,
            objective.contribution,
            batches=source,
            signature=source.signature,
            comm=comm,
            mode=mode,
            jit_compile=jit_compile,
            check_deterministic=check_deterministic,
        )
        self.n_samples = objective.n_global
        # The curvature operators (GGN, Fisher) of the same objective start from it.
        self._objective = objective
        return self
