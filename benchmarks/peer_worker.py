"""The peers' side of the side-by-side benchmark, run in the peers' own interpreter.

Started by `bench_peers.py` as ``PYTHON peer_worker.py CASE.npz`` with
PyTorch, curvlinops, PyHessian and hessian-eigenthings installed (none of
them is a dependency of the project, and TensorFlow is not needed here).
The ``.npz`` file holds the case: the architecture, the Keras weights, the
data and the probe vectors, in TensorFlow's layout. This worker builds the
same model in PyTorch (float32), copies the weights in, and answers one
JSON request per line on stdin with one JSON line on stdout:

- ``hello``: versions, threads, the peers available (a reason for each that is not);
- ``agree``: H v by each peer and a tight lambda_1, written to an ``.npz``
  in TensorFlow's layout, for the cross-framework check;
- ``warm``: warm-up of one metric, calls per sample (and, for
  hessian-eigenthings' fixed-step Lanczos, the steps that reach 1e-6);
- ``round``: one timed round of one metric and of PyTorch's own gradient,
  in a shuffled order.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import random
import sys
import time
import traceback

import numpy as np
import timing

THREADS = 2
EIGSH_TOL = 1e-6
# The reference lambda_1: a residual tolerance float32 products can reach
# (their rounding is ~1e-7 of |H|); the eigenvalue's error is about its square.
REFERENCE = {"tol": 1e-6, "ncv": 40, "maxiter": 1000}
HUTCHPP_MATVECS = 99
LANCZOS_STEPS = (10, 15, 20, 25, 30, 40, 50, 60, 80, 100)
PEERS = {
    "curvlinops": "curvlinops",
    "pyhessian": "pyhessian",
    "hessian-eigenthings": "hessian_eigenthings",
}


def to_torch_layout(array):
    """A Keras weight (or a slice of a vector shaped like one) in PyTorch's layout."""
    if array.ndim == 2:  # Dense kernel (in, out) -> Linear weight (out, in)
        return array.T
    if array.ndim == 4:  # Conv2D kernel (kh, kw, in, out) -> Conv2d weight (out, in, kh, kw)
        return np.transpose(array, (3, 2, 0, 1))
    return array


def to_tf_layout(array):
    """The inverse of `to_torch_layout`."""
    if array.ndim == 2:
        return array.T
    if array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    return array


class Case:
    """The PyTorch model, data, vectors and peers of one case."""

    def __init__(self, path):
        import torch

        torch.set_num_threads(THREADS)
        self.torch = torch
        data = np.load(path)
        self.kind = str(data["kind"])
        shapes = [tuple(s) for s in json.loads(str(data["shapes"]))]
        flat = data["weights"]
        bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
        self.tf_shapes = shapes
        self.bounds = bounds
        weights = [
            flat[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes, strict=True)
        ]
        self.model = self._model(self.kind, [int(d) for d in data["layers"]])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        with torch.no_grad():
            for param, weight in zip(self.params, weights, strict=True):
                param.copy_(torch.from_numpy(np.ascontiguousarray(to_torch_layout(weight))))
        x = data["x"]
        if self.kind == "conv":
            x = np.transpose(x, (0, 3, 1, 2))  # NHWC -> NCHW
        self.X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.Y = torch.from_numpy(data["y"].astype(np.int64))
        self.criterion = torch.nn.CrossEntropyLoss()
        self.n = sum(p.numel() for p in self.params)
        self.v = self.vector(data["v"])
        self.V = torch.stack([self.vector(c) for c in data["V"].T], 1)
        self.v0 = self.vector(data["v0"]).double().numpy()
        self.peers, self.missing = {}, {}
        for name, module in PEERS.items():
            try:
                self.peers[name] = importlib.import_module(module)
            except Exception as exc:  # an absent peer is a result, not an error
                self.missing[name] = f"{module} not importable ({type(exc).__name__})"
        self._setup()

    def _model(self, kind, layers):
        nn = self.torch.nn
        if kind == "mlp":
            modules = []
            for i, (fan_in, fan_out) in enumerate(itertools.pairwise(layers)):
                modules.append(nn.Linear(fan_in, fan_out))
                if i < len(layers) - 2:
                    modules.append(nn.Tanh())
            return nn.Sequential(*modules)
        if kind == "conv":

            class NHWC(nn.Module):
                # Keras flattens NHWC: permute before flattening, so the
                # Dense kernel is copied as it is.
                def forward(self, x):
                    return x.permute(0, 2, 3, 1)

            return nn.Sequential(
                nn.Conv2d(1, 8, 3, stride=2),
                nn.Tanh(),
                nn.Conv2d(8, 16, 3, stride=2),
                nn.Tanh(),
                NHWC(),
                nn.Flatten(),
                nn.Linear(576, 80),
                nn.Tanh(),
                nn.Linear(80, 10),
            )
        raise ValueError(f"unknown kind {kind!r}")

    def vector(self, flat_tf):
        """A flat vector in TF's layout -> a flat float32 tensor in PyTorch's."""
        parts = [
            to_torch_layout(np.asarray(flat_tf[a:b]).reshape(s)).ravel()
            for a, b, s in zip(self.bounds[:-1], self.bounds[1:], self.tf_shapes, strict=True)
        ]
        return self.torch.from_numpy(np.concatenate(parts).astype(np.float32))

    def to_tf(self, flat_torch):
        """A flat PyTorch-layout vector -> a flat float64 NumPy vector in TF's layout."""
        flat = np.asarray(flat_torch, dtype=np.float64)
        parts, start = [], 0
        for shape in self.tf_shapes:
            torch_shape = to_torch_layout(np.empty(shape)).shape
            size = int(np.prod(shape))
            parts.append(to_tf_layout(flat[start : start + size].reshape(torch_shape)).ravel())
            start += size
        return np.concatenate(parts)

    def _setup(self):
        torch = self.torch
        self.clocks = {}
        if "curvlinops" in self.peers:
            curvlinops = self.peers["curvlinops"]
            self.curvlinops = curvlinops.HessianLinearOperator(
                self.model,
                self.criterion,
                self.params,
                [(self.X, self.Y)],
                check_deterministic=False,
            )
            self.clocks["curvlinops"] = timing.OperatorClock(
                self.curvlinops, ("_matmat",), columns=lambda M: int(M[0].shape[-1])
            )
            self.curvlinops_scipy = self.curvlinops.to_scipy()
        if "pyhessian" in self.peers:
            # The module (the package exports the class under the same name),
            # whose global the class's methods call.
            module = importlib.import_module("pyhessian.hessian")
            self.pyhessian_module = module
            self.clocks["pyhessian"] = timing.OperatorClock(
                module, ("hessian_vector_product",), columns=lambda *_: 1
            )
            self.pyhessian = self._pyhessian()
        if "hessian-eigenthings" in self.peers:
            he = self.peers["hessian-eigenthings"]
            self.eigenthings = he.HessianOperator(
                self.model,
                [(self.X, self.Y)],
                he.supervised_loss(self.criterion),
                full_dataset=True,
            )
            self.clocks["hessian-eigenthings"] = timing.OperatorClock(
                self.eigenthings, ("matvec",), columns=lambda *_: 1
            )
        self.lanczos_steps = None
        self.reference = None
        self._v_list = self._split(self.v)
        torch.manual_seed(0)

    def _pyhessian(self):
        """A PyHessian `hessian`: its construction runs the forward and backward passes once."""
        for param in self.params:
            param.grad = None  # PyHessian reads .grad, which backward() accumulates
        return self.peers["pyhessian"].hessian(
            self.model, self.criterion, data=(self.X, self.Y), cuda=False
        )

    def _split(self, flat):
        out, start = [], 0
        for param in self.params:
            out.append(flat[start : start + param.numel()].view_as(param))
            start += param.numel()
        return out

    def gradient(self):
        torch = self.torch
        loss = self.criterion(self.model(self.X), self.Y)
        grads = torch.autograd.grad(loss, self.params)
        return torch.cat([g.reshape(-1) for g in grads]).numpy()

    def pyhessian_hvp(self, vectors):
        hv = self.pyhessian_module.hessian_vector_product(
            self.pyhessian.gradsH, self.pyhessian.params, vectors
        )
        return self.torch.cat([h.reshape(-1) for h in hv])

    # ------------------------------------------------------------ metrics

    def metric(self, name, seed=0):
        """peer name -> (call, columns, clock or None) for one metric."""
        impls = {}
        peers = self.peers
        if name in ("matvec", "matvec_fixed"):
            if "curvlinops" in peers:
                impls["curvlinops"] = (lambda: self.curvlinops @ self.v, 1, None)
            if "pyhessian" in peers:
                impls["pyhessian"] = (lambda: self.pyhessian_hvp(self._v_list), 1, None)
            if "hessian-eigenthings" in peers:
                impls["hessian-eigenthings"] = (lambda: self.eigenthings.matvec(self.v), 1, None)
        elif name in ("matmat32", "matmat32_fixed"):
            if "curvlinops" in peers:
                impls["curvlinops"] = (lambda: self.curvlinops @ self.V, self.V.shape[1], None)
        elif name == "eigsh":
            if "curvlinops" in peers:
                impls["curvlinops"] = (self._curvlinops_eigsh, 1, self.clocks["curvlinops"])
            if "pyhessian" in peers:
                impls["pyhessian"] = (self._pyhessian_eigenvalue, 1, self.clocks["pyhessian"])
            if "hessian-eigenthings" in peers and self.lanczos_steps:
                impls["hessian-eigenthings"] = (
                    lambda: self._eigenthings_lanczos(self.lanczos_steps),
                    1,
                    self.clocks["hessian-eigenthings"],
                )
        elif name == "hutchpp":
            if "curvlinops" in peers:
                curvlinops = peers["curvlinops"]

                def curvlinops_hutchpp():
                    self.torch.manual_seed(seed)
                    return float(curvlinops.hutchpp_trace(self.curvlinops, HUTCHPP_MATVECS))

                impls["curvlinops"] = (curvlinops_hutchpp, 1, self.clocks["curvlinops"])
            if "hessian-eigenthings" in peers:
                he = peers["hessian-eigenthings"]
                impls["hessian-eigenthings"] = (
                    lambda: (
                        he.hutch_plus_plus(
                            self.eigenthings, num_matvecs=HUTCHPP_MATVECS, seed=seed
                        ).estimate
                    ),
                    1,
                    self.clocks["hessian-eigenthings"],
                )
            if "pyhessian" in peers:
                impls["pyhessian (Hutchinson)"] = (
                    self._pyhessian_trace,
                    1,
                    self.clocks["pyhessian"],
                )
        return impls

    def _curvlinops_eigsh(self, **options):
        from scipy.sparse.linalg import eigsh

        options = {"tol": EIGSH_TOL, **options}
        values = eigsh(self.curvlinops_scipy, k=1, which="LA", v0=self.v0, **options)[0]
        return float(values[0])

    def _pyhessian_eigenvalue(self):
        # PyHessian's own route: a hessian per point (forward and backward
        # once), then power iteration with its relative-change test.
        self.torch.manual_seed(0)
        return float(self._pyhessian().eigenvalues(maxIter=100, tol=EIGSH_TOL)[0][0])

    def _pyhessian_trace(self):
        self.torch.manual_seed(0)
        return float(np.mean(self._pyhessian().trace(maxIter=HUTCHPP_MATVECS, tol=0.0)))

    def _eigenthings_lanczos(self, steps):
        he = self.peers["hessian-eigenthings"]
        result = he.lanczos(self.eigenthings, k=1, max_iter=steps, which="LA", seed=0)
        return float(result.eigenvalues[0])

    # ----------------------------------------------------------- requests

    def hello(self):
        from importlib.metadata import PackageNotFoundError, version

        versions = {"torch": self.torch.__version__, "numpy": np.__version__}
        for name in PEERS:
            distribution = {"curvlinops": "curvlinops-for-pytorch"}.get(name, name)
            try:
                versions[name] = version(distribution)
            except PackageNotFoundError:
                versions[name] = "unavailable"
        return {
            "n": self.n,
            "versions": versions,
            "threads": self.torch.get_num_threads(),
            "peers": sorted(self.peers),
            "missing": self.missing,
        }

    def agree(self, out):
        """H v by each peer and a tight lambda_1, saved to `out` in TF's layout."""
        started = time.perf_counter()
        arrays = {
            peer: self.to_tf(call().detach().numpy())
            for peer, (call, _, _) in self.metric("matvec").items()
        }
        lambda_1 = None
        if "curvlinops" in self.peers:
            lambda_1 = self._curvlinops_eigsh(**REFERENCE)
            self.reference = lambda_1
        np.savez(out, **{k.replace("-", "_"): v for k, v in arrays.items()})
        return {
            "lambda_1": lambda_1,
            "peers": sorted(arrays),
            "seconds": time.perf_counter() - started,
        }

    def warm(self, metric, warmup, sample_time, seed=0):
        answer = {}
        if metric == "eigsh" and "hessian-eigenthings" in self.peers and self.reference:
            # Fixed-step Lanczos: the fewest steps on the ladder within 1e-6 of lambda_1.
            ladder = []
            for steps in LANCZOS_STEPS:
                error = abs(self._eigenthings_lanczos(steps) - self.reference) / abs(self.reference)
                ladder.append([steps, error])
                if error <= EIGSH_TOL:
                    self.lanczos_steps = steps
                    break
            answer["lanczos_ladder"] = ladder
        numbers = {}
        algorithm = metric in ("eigsh", "hutchpp")
        for peer, (call, _, _) in self.metric(metric, seed).items():
            if algorithm:
                call()
                numbers[peer] = 1
            else:
                numbers[peer] = timing.calibrate(call, warmup=warmup, sample_time=sample_time)
        numbers["gradient"] = timing.calibrate(
            self.gradient, warmup=warmup, sample_time=sample_time
        )
        self.numbers = numbers
        answer["numbers"] = numbers
        return answer

    def round(self, metric, seed=0):
        impls = self.metric(metric, seed)
        order = ["gradient", *impls]
        random.Random(seed).shuffle(order)
        out = {}
        for label in order:
            if label == "gradient":
                out[label] = {"seconds": timing.sample(self.gradient, self.numbers[label])}
                continue
            call, columns, clock = impls[label]
            if clock is None:
                out[label] = {"seconds": timing.sample(call, self.numbers[label]) / columns}
                continue
            inside, products = clock.seconds, clock.products
            start = time.perf_counter()
            value = call()
            seconds = time.perf_counter() - start
            out[label] = {
                "seconds": seconds,
                "in_products_s": clock.seconds - inside,
                "products": clock.products - products,
                "value": float(value),
            }
        return out


def main(argv):
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
    sys.stdout = sys.stderr
    try:
        case = Case(argv[1])
    except Exception as exc:
        reply.write(json.dumps({"error": f"setup failed: {exc!r}"[:500]}) + "\n")
        traceback.print_exc()
        return 1
    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = getattr(case, request["op"])(**request.get("args", {}))
        except Exception as exc:
            traceback.print_exc()
            answer = {"error": f"{request['op']}: {exc!r}"[:500]}
        reply.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
