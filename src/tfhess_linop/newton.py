"""Truncated-Newton (Newton-CG) training with negative-curvature steps.

:class:`NewtonCG` minimises the loss of a :class:`tfhess_linop.Hessian`
(a Keras model's training objective on data, or any loss of plain variables): each
step solves the Newton system :math:`(H + \\lambda I) p = -g` inexactly with
Steihaug's CG (:func:`tfhess_linop.cg`); where CG meets a direction of
non-positive curvature it follows that direction instead, with the sign that
descends; an Armijo backtracking line search chooses the step length. The
variables are updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _checks, _mpi
from .curvature import GGN, CurvatureOperator
from .hessian import Hessian
from .linop import HessianOperator, as_linop
from .solve import cg

__all__ = ["NewtonCG", "NewtonHistory", "NewtonStep"]


@dataclass(frozen=True)
class NewtonStep:
    """What one Newton-CG step did.

    Attributes
    ----------
    loss, grad_norm : float
        Loss and gradient norm at the start of the step.
    new_loss : float
        Loss after the step (equal to `loss` when no step was taken).
    cg_iterations : int
        CG iterations spent on the step (one Hessian-vector product each).
    negative_curvature : bool
        Whether the step followed a direction of negative curvature.
    step_length : float
        Accepted line-search factor t (0 when the line search failed).
    step_norm : float
        Norm of the parameter change.
    """

    loss: float
    grad_norm: float
    new_loss: float
    cg_iterations: int
    negative_curvature: bool
    step_length: float
    step_norm: float


@dataclass
class NewtonHistory:
    """Per-step record of :meth:`NewtonCG.minimize`.

    Attributes
    ----------
    steps : list of NewtonStep
    loss, grad_norm : float
        At the end (after the last step).
    converged : bool
        Whether the gradient norm reached `gtol`.
    message : str
        Why the iteration stopped.
    n_hvp : int
        Hessian-vector products spent in total.
    """

    steps: list = field(default_factory=list)
    loss: float = np.nan
    grad_norm: float = np.nan
    converged: bool = False
    message: str = ""
    n_hvp: int = 0

    def __len__(self):
        return len(self.steps)

    def _column(self, name):
        return np.array([getattr(step, name) for step in self.steps])

    @property
    def losses(self):
        """Loss before each step, then the final loss: shape (steps + 1,)."""
        return np.append(self._column("loss"), self.loss)

    @property
    def grad_norms(self):
        """Gradient norm before each step, then the final one: shape (steps + 1,)."""
        return np.append(self._column("grad_norm"), self.grad_norm)

    @property
    def cg_iterations(self):
        """CG iterations of each step."""
        return self._column("cg_iterations")

    @property
    def negative_curvature(self):
        """Whether each step followed negative curvature."""
        return self._column("negative_curvature").astype(bool)

    @property
    def step_lengths(self):
        """Accepted line-search factor of each step."""
        return self._column("step_length")


class _Damped(LinearOperator):
    """``A + damping * I`` for a symmetric operator A."""

    def __init__(self, A, damping):
        self.A, self.damping = A, damping
        self.comm = A.comm
        super().__init__(dtype=np.float64, shape=A.shape)

    def _matvec(self, x):
        return self.A.matvec(x) + self.damping * x.reshape(-1)

    def _matmat(self, X):
        return self.A.matmat(X) + self.damping * X

    def _adjoint(self):
        return self


class NewtonCG:
    """Minimise a loss by truncated Newton steps with negative curvature.

    Each step at the parameters w, with gradient g and Hessian H:

    1. Solve :math:`(H + \\lambda I)\\, p = -g` by CG (:func:`tfhess_linop.cg`)
       to the relative tolerance :math:`\\eta = \\min(0.5, \\sqrt{\\|g\\|})`
       (Eisenstat-Walker forcing: superlinear convergence near a minimum) or
       `cg_rtol`, in at most `max_cg_iter` iterations.
    2. If CG stops on a direction d with :math:`d^T (H + \\lambda I) d \\le 0`
       (Steihaug), step along d instead, with the sign that makes
       :math:`g^T d \\le 0` and the length :math:`\\max(|c|, \\|p\\|)`, where c
       is the curvature :math:`d^T H d / \\|d\\|^2` and p the CG iterate: a
       saddle point or a non-convex region is left, not stalled at.
    3. Backtrack :math:`t = 1, \\beta, \\beta^2, \\dots` until the Armijo
       condition :math:`L(w + t p) \\le L(w) + \\sigma\\, (t\\, g^T p +
       \\tfrac12 t^2 \\min(0, p^T H p))` holds (the second-order term only on
       negative curvature). Along negative curvature, where the quadratic
       model is unbounded below, a step accepted at t = 1 is lengthened
       (:math:`t = 1/\\beta, 1/\\beta^2, \\dots`) while the condition holds
       and the loss keeps decreasing. Then :math:`w + t p` is assigned to the
       variables.

    The Hessian object reads the variables' current values at every call, so
    one `Hessian` (and its compiled functions) serves all steps; nothing is
    rebuilt per step. Each step costs one loss-and-gradient pass per trial
    point plus one Hessian-vector product per CG iteration.

    Collective over the Hessian's communicator: every rank takes the same
    steps.

    Parameters
    ----------
    hessian : Hessian, HessianOperator, GGN or Fisher
        The loss to minimise and its derivatives, e.g.
        ``Hessian.from_keras(model, loss, x, y)`` or ``Hessian(loss, variables)``;
        a curvature operator (`GGN`, `Fisher`) replaces the Hessian in the
        Newton system.
    max_cg_iter : int, optional
        CG iterations per step.
    cg_rtol : float, optional
        Fixed CG relative tolerance instead of the forcing sequence.
    damping : float, optional
        λ ≥ 0 added to the Hessian (Levenberg-Marquardt-like damping; it
        shortens steps where the curvature is small).
    armijo : float, optional
        σ in (0, 1), the sufficient-decrease constant.
    backtrack : float, optional
        β in (0, 1), the step-length reduction factor.
    max_backtrack : int, optional
        Trials per line search before the step is declared failed.
    curvature : {None, "hessian", "ggn"}, optional
        The matrix of the Newton system. None: that of `hessian` (the
        Hessian, or the `GGN`/`Fisher` given). "ggn": the generalized
        Gauss-Newton matrix of the same Keras objective (Hessian-free
        optimisation à la Martens; `hessian` must come from
        `Hessian.from_keras`): positive semi-definite for convex losses, so
        with ``damping > 0`` CG meets no negative curvature and every step
        descends.

    Attributes
    ----------
    hessian : Hessian
        Gives the loss and gradient.
    curvature : Hessian or CurvatureOperator
        The matrix of the Newton system.
    operator : HessianOperator
        Counts its products (``operator.n_hvp``).

    See Also
    --------
    cg : Steihaug's conjugate gradients.

    References
    ----------
    .. [1] J. Nocedal, S. J. Wright, "Numerical Optimization", 2nd ed.,
       Springer 2006, Algorithms 7.1 (line-search Newton-CG) and 7.2
       (CG-Steihaug).
    .. [2] C. W. Royer, M. O'Neill, S. J. Wright, "A Newton-CG algorithm with
       complexity guarantees for smooth unconstrained optimization",
       Math. Program. 180, 2020.

    Examples
    --------
    A strictly convex quadratic is minimised in one step:

    >>> import numpy as np, tensorflow as tf
    >>> import tfhess_linop as thl
    >>> w = tf.Variable([3.0, -1.0], dtype=tf.float64)
    >>> A = tf.constant([[3.0, 1.0], [1.0, 2.0]], dtype=tf.float64)
    >>> H = thl.Hessian(lambda w: 0.5 * tf.tensordot(w, tf.linalg.matvec(A, w), 1) - w[0], w)
    >>> history = thl.NewtonCG(H, cg_rtol=1e-12).minimize(steps=5, gtol=1e-10)
    >>> history.converged, len(history)
    (True, 1)
    >>> np.allclose(w.numpy(), np.linalg.solve(A.numpy(), [1.0, 0.0]))
    True

    Near the saddle point of :math:`x^2 - y^2 + y^4` at the origin, the
    first step follows negative curvature towards a minimum at
    :math:`(0, \\pm 1/\\sqrt{2})`:

    >>> w = tf.Variable([0.0, 0.1], dtype=tf.float64)
    >>> opt = thl.NewtonCG(thl.Hessian(lambda w: w[0]**2 - w[1]**2 + w[1]**4, w))
    >>> opt.step().negative_curvature
    True
    >>> history = opt.minimize(gtol=1e-10)
    >>> np.allclose(w.numpy(), [0.0, np.sqrt(0.5)])
    True
    """

    def __init__(
        self,
        hessian,
        *,
        max_cg_iter=100,
        cg_rtol=None,
        damping=0.0,
        armijo=1e-4,
        backtrack=0.5,
        max_backtrack=30,
        curvature=None,
    ):
        if isinstance(hessian, HessianOperator):
            hessian = hessian.hessian
        matrix = hessian
        if isinstance(hessian, CurvatureOperator):
            hessian = hessian.hessian
        if not isinstance(hessian, Hessian):
            raise TypeError(
                "`hessian` must be a tfhess_linop.Hessian, HessianOperator, GGN, Fisher or "
                f"EmpiricalFisher, got {type(hessian).__name__}."
            )
        if curvature == "ggn":
            matrix = matrix if isinstance(matrix, GGN) else GGN.from_hessian(hessian)
        elif curvature == "hessian":
            matrix = hessian
        elif curvature is not None:
            raise ValueError(f"`curvature` must be 'hessian', 'ggn' or None; got {curvature!r}.")
        self.max_cg_iter = _checks.positive_integer(max_cg_iter, "max_cg_iter")
        self.cg_rtol = None if cg_rtol is None else _checks.nonnegative_real(cg_rtol, "cg_rtol")
        self.damping = _checks.nonnegative_real(damping, "damping")
        for value, name in ((armijo, "armijo"), (backtrack, "backtrack")):
            if not 0.0 < _checks.nonnegative_real(value, name) < 1.0:
                raise ValueError(f"`{name}` must lie in (0, 1), got {value}.")
        self.armijo, self.backtrack = float(armijo), float(backtrack)
        self.max_backtrack = _checks.positive_integer(max_backtrack, "max_backtrack")
        self.hessian = hessian
        self.curvature = matrix
        self.operator = as_linop(matrix)
        self._system = (
            self.operator if self.damping == 0.0 else _Damped(self.operator, self.damping)
        )

    @classmethod
    def from_keras(cls, model, loss=None, x=None, y=None, *, hessian_options=None, **options):
        """Newton-CG for the objective a Keras model trains, on ``(x, y)``.

        ``hessian_options`` go to :meth:`Hessian.from_keras` (``batch_size``,
        ``comm``, ...), the other keywords to :class:`NewtonCG`.
        """
        hessian = Hessian.from_keras(model, loss, x, y, **(hessian_options or {}))
        return cls(hessian, **options)

    # ----------------------------------------------------------------- steps

    def step(self):
        """Take one Newton-CG step and return its :class:`NewtonStep`.

        Collective over the Hessian's communicator. When the step is
        interrupted or a loss evaluation raises, the variables are restored
        to the step's starting point before the exception propagates.
        """
        with (
            _mpi.collective_call(self.hessian.comm, "NewtonCG.step", n=self.hessian.n),
            self.hessian.fixed_point(),
        ):
            value, gradient = self.hessian.value_and_gradient()
            record, _, _ = self._step(value, gradient)
            return record

    def minimize(self, steps=100, gtol=1e-6, callback=None):
        """Take Newton-CG steps until ``‖g‖ <= gtol`` or `steps` steps.

        Collective over the Hessian's communicator. When a step is
        interrupted or a loss evaluation raises, the variables hold the last
        accepted point (the start of that step) as the exception propagates.

        Parameters
        ----------
        steps : int, optional
            Maximum number of steps.
        gtol : float, optional
            Stop when the gradient norm is at most this.
        callback : callable, optional
            Called as ``callback(step)`` with each :class:`NewtonStep`;
            returning True stops the iteration.

        Returns
        -------
        NewtonHistory
        """
        with (
            _mpi.collective_call(
                self.hessian.comm,
                "NewtonCG.minimize",
                n=self.hessian.n,
                steps=steps,
                gtol=gtol,
                callback=callback,
            ),
            self.hessian.fixed_point(),
        ):
            steps = _checks.nonnegative_integer(steps, "steps")
            gtol = _checks.nonnegative_real(gtol, "gtol")
            start = self.operator.n_hvp
            history = NewtonHistory()
            value, gradient = self.hessian.value_and_gradient()
            history.message = f"reached {steps} steps"
            while True:
                grad_norm = float(np.linalg.norm(gradient))
                if grad_norm <= gtol:
                    history.converged = True
                    history.message = f"gradient norm {grad_norm:.3e} <= gtol"
                    break
                if len(history) == steps:
                    break
                record, value, gradient = self._step(value, gradient)
                history.steps.append(record)
                if record.step_length == 0.0:
                    history.message = "line search failed: no decrease along the step"
                    break
                if callback is not None and callback(record):
                    history.message = "stopped by callback"
                    break
            history.loss, history.grad_norm = value, float(np.linalg.norm(gradient))
            history.n_hvp = self.operator.n_hvp - start
            return history

    def _step(self, value, gradient):
        """One step from (value, gradient) at the current variables.

        Returns the record and the loss and gradient at the new point.
        """
        grad_norm = float(np.linalg.norm(gradient))
        rtol = self.cg_rtol if self.cg_rtol is not None else min(0.5, np.sqrt(grad_norm))
        result = cg(self._system, -gradient, rtol=rtol, maxiter=self.max_cg_iter)
        certificate = result.negative_curvature
        if certificate is None:
            direction, curvature = result.x, 0.0
        else:
            d = certificate.direction / np.linalg.norm(certificate.direction)
            sign = -1.0 if gradient @ d > 0 else 1.0
            length = max(abs(certificate.curvature), float(np.linalg.norm(result.x)))
            direction = sign * length * d
            curvature = certificate.curvature * length**2
        if not np.any(direction):
            # Zero curvature along CG's first direction and no CG progress:
            # the certificate gives no length, so take a gradient step.
            direction = -gradient
        slope = float(gradient @ direction)
        point = self.hessian.flatten([variable.numpy() for variable in self.hessian.variables])
        try:
            accepted = self._line_search(point, direction, value, slope, curvature, certificate)
        except BaseException:
            # The variables hold the last trial point, which no test accepted:
            # an interrupt (KeyboardInterrupt included) or a failing loss
            # evaluation leaves them where the step started.
            _checks.assign_flat(self.hessian, point)
            raise
        if accepted is None:
            _checks.assign_flat(self.hessian, point)
            record = NewtonStep(
                value, grad_norm, value, result.n_matvec, certificate is not None, 0.0, 0.0
            )
            return record, value, gradient
        t, new_value, new_gradient = accepted
        _checks.assign_flat(self.hessian, point + t * direction)
        record = NewtonStep(
            value,
            grad_norm,
            new_value,
            result.n_matvec,
            certificate is not None,
            t,
            t * float(np.linalg.norm(direction)),
        )
        return record, new_value, new_gradient

    def _line_search(self, point, direction, value, slope, curvature, certificate):
        """Armijo backtracking from t = 1; forward tracking on negative curvature.

        Returns (t, loss, gradient) at the accepted point, or None.
        """

        def trial(t):
            _checks.assign_flat(self.hessian, point + t * direction)
            new_value, new_gradient = self.hessian.value_and_gradient()
            decrease = t * slope + 0.5 * t * t * min(0.0, curvature)
            return new_value <= value + self.armijo * decrease, (t, new_value, new_gradient)

        t = 1.0
        for _ in range(self.max_backtrack):
            ok, accepted = trial(t)
            if ok:
                break
            t *= self.backtrack
        else:
            return None
        if certificate is not None and t == 1.0:
            # The model is unbounded below along a negative-curvature
            # direction: lengthen the step while the loss keeps decreasing.
            for _ in range(self.max_backtrack):
                ok, longer = trial(accepted[0] / self.backtrack)
                if not ok or longer[1] >= accepted[1]:
                    break
                accepted = longer
        return accepted
