"""The peers section: tfhess_linop against curvlinops, PyHessian and hessian-eigenthings.

The peers run in PyTorch, in an interpreter of their own (``--peers-python
PATH`` or the ``TFHESS_LINOP_PEERS_PYTHON`` variable; `peer_worker.py` is
its side). Both sides get the same case: the Keras model's weights, the data
and the probe vectors go to the worker in an ``.npz`` file, in float32. For
each metric the two processes alternate rounds (the worker's round, then
ours, then ours first), and each side times, in the same round, the metric
and its own framework's gradient; so every metric is reported as a ratio to
its own gradient and as tfhess_linop / peer, both medians of per-round
ratios. Without the interpreter, or without any peer in it, the section is
skipped with a note.
"""

from __future__ import annotations

import json
import os
import random
import select
import statistics
import subprocess
import tempfile

import cases
import numpy as np
import tf_metrics
from harness import HERE

PEERS_ENV = "TFHESS_LINOP_PEERS_PYTHON"
# PyTorch's OpenMP threads spin while they wait; on a loaded machine a
# spinning thread holds the core its partner needs (measured at load 10 on
# 2 cores: a gradient's median 248 ms spinning, 3.1 ms passive). Passive
# waiting is the peers' better setting here; set OMP_WAIT_POLICY to override.
OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
TITLES = {
    "matvec": "matvec",  # the default: passes kept between products (`keep_passes`)
    "matvec_fixed": "matvec at a fixed point",
    "matmat32": "matmat(32) per column",
    "matmat32_fixed": "matmat(32) per column at a fixed point",
    "eigsh": "eigsh top-1 to 1e-6",
    "hutchpp": f"Hutch++, {tf_metrics.HUTCHPP_MATVECS} products",
}
# Not a peer's Hutch++ (PyHessian has Hutchinson only): reported, never the best peer.
NOT_COMPARABLE = {"pyhessian (Hutchinson)"}


class PeerWorker:
    """`peer_worker.py` in the peers' interpreter: one JSON request, one JSON answer."""

    def __init__(self, python, case_path, timeout):
        self.timeout = timeout
        self.stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [python, os.path.join(HERE, "peer_worker.py"), case_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=HERE,
            env=dict(os.environ, PYTHONPATH=HERE, OMP_WAIT_POLICY=OMP_WAIT_POLICY),
        )
        try:
            self._answer()
        except Exception:
            self.close()
            raise

    def _answer(self):
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().strip().splitlines()[-4:])
            raise RuntimeError(f"peer worker gave no answer (exit {self.process.poll()}): {tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def call(self, op, **args):
        self.process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self):
        """End the worker (closing its stdin ends its loop) and release the pipes."""
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


def peers_python(settings):
    """The peers' interpreter, or None with the reason why not."""
    python = settings.peers_python or os.environ.get(PEERS_ENV)
    if not python:
        return None, (
            f"no peers interpreter: pass --peers-python PATH or set {PEERS_ENV} "
            "(benchmarks/README.md says how to make one)"
        )
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return None, f"peers interpreter {python!r} is not an executable file"
    return python, None


def write_case(path, case, model, x, y, side):
    weights = [np.asarray(v.numpy(), dtype=np.float32) for v in model.trainable_variables]
    np.savez(
        path,
        kind=case.kind,
        layers=np.asarray(case.layers or (0,)),
        shapes=json.dumps([list(w.shape) for w in weights]),
        weights=np.concatenate([w.ravel() for w in weights]),
        x=np.asarray(x, dtype=np.float32),
        y=np.asarray(y),
        v=side.v,
        V=side.V,
        v0=side.v0,
    )


def bench_peers(name, settings, rec):
    sec = "peers"
    python, reason = peers_python(settings)
    if python is None:
        rec.skip(sec, name, reason)
        return
    case = cases.CASES[name]
    if settings.operator_samples:
        case = cases.with_samples(case, settings.operator_samples)
    model, loss, x, y = cases.build(case)
    side = tf_metrics.TFSide(model, loss, x, y)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "case.npz")
        write_case(path, case, model, x, y, side)
        try:
            worker = PeerWorker(python, path, timeout=settings.peer_timeout)
        except RuntimeError as exc:  # e.g. no PyTorch in that interpreter
            rec.skip(sec, name, f"peer worker did not start: {exc}"[:300])
            return
        try:
            hello = worker.call("hello")
            for peer, why in hello["missing"].items():
                rec.skip(sec, f"{name}:{peer}", why)
            if not hello["peers"]:
                return
            details = {"case": case.description, "n": side.n, "worker": hello}
            _agreement(name, side, worker, folder, rec, details)
            details["metrics"] = {}
            for metric in tf_metrics.METRICS:
                summary = _metric(name, metric, side, worker, settings, rec)
                if summary:
                    details["metrics"][metric] = summary
            rec.detail(sec, name, details)
        finally:
            worker.close()


def _agreement(name, side, worker, folder, rec, details):
    out = os.path.join(folder, "agree.npz")
    answer = worker.call("agree", out=out)
    products = np.load(out)
    ours = side.A.matvec(side.v)
    scale = np.linalg.norm(ours)
    differences = {
        peer: float(np.linalg.norm(products[peer.replace("-", "_")] - ours) / scale)
        for peer in answer["peers"]
    }
    lambda_tf = side.reference_eigenvalue()
    lambda_peer = answer["lambda_1"]
    details["agreement"] = {
        "hvp_relative_difference": differences,
        "lambda_1": {"tfhess_linop": lambda_tf, "curvlinops": lambda_peer},
    }
    side.reference = lambda_tf
    worst = max(differences, key=differences.get)
    rec.row(
        "peers",
        name,
        "HVP agreement: max relative difference",
        differences[worst],
        "",
        note=", ".join(f"{p} {d:.1e}" for p, d in differences.items())
        + f"; float32 on both sides; n={side.n}",
    )
    if lambda_peer is not None:
        rec.row(
            "peers",
            name,
            "lambda_1 agreement: relative difference",
            abs(lambda_tf - lambda_peer) / abs(lambda_tf),
            "",
            note=f"tfhess_linop {lambda_tf:.8g}, curvlinops + scipy eigsh {lambda_peer:.8g} "
            "(ncv 40, tol 1e-6 each)",
        )


def _tf_round(impls, numbers, gradient_number, side, seed):
    order = ["gradient", *impls]
    random.Random(seed).shuffle(order)
    out = {}
    for label in order:
        if label == "gradient":
            impl = tf_metrics.Impl(side.gradient)
            out[label] = tf_metrics.measure(impl, gradient_number)
        else:
            out[label] = tf_metrics.measure(impls[label], numbers[label])
    return out


def _metric(name, metric, side, worker, settings, rec):
    impls = side.metric(metric)
    title = TITLES[metric]
    if not impls:
        rec.skip("peers", f"{name}:{metric}", "Hessian.fixed_point is not in this version")
        return None
    algorithm = metric in tf_metrics.ALGORITHMS
    repeats = settings.peer_algorithm_repeats if algorithm else settings.peer_repeats
    warmup = 1 if algorithm else settings.warmup
    numbers = tf_metrics.numbers(
        impls, warmup=warmup, sample_time=settings.sample_time, algorithm=algorithm
    )
    gradient_number = tf_metrics.numbers(
        {"g": tf_metrics.Impl(side.gradient)},
        warmup=settings.warmup,
        sample_time=settings.sample_time,
        algorithm=False,
    )["g"]
    warm = worker.call("warm", metric=metric, warmup=warmup, sample_time=settings.sample_time)
    ours, theirs = [], []
    for r in range(repeats):
        for turn in ("peer", "tf") if r % 2 == 0 else ("tf", "peer"):
            if turn == "peer":
                theirs.append(worker.call("round", metric=metric, seed=r))
            else:
                ours.append(_tf_round(impls, numbers, gradient_number, side, r))
    return _summarise(name, metric, title, ours, theirs, warm, side, rec)


def _median(values):
    return statistics.median(list(values))


def _summarise(name, metric, title, ours, theirs, warm, side, rec):
    sec = "peers"
    label = "tfhess_linop"
    summary = {"rounds_tfhess_linop": ours, "rounds_peers": theirs, "warm": warm}

    def stats(rounds, key):
        return {
            "seconds": _median(r[key]["seconds"] for r in rounds),
            "per_gradient": _median(r[key]["seconds"] / r["gradient"]["seconds"] for r in rounds),
            "products": _median(r[key].get("products", 0) for r in rounds),
            "outside_s": _median(
                r[key]["seconds"] - r[key].get("in_products_s", r[key]["seconds"]) for r in rounds
            ),
            "value": rounds[-1][key].get("value"),
        }

    mine = stats(ours, label)
    peers = {peer: stats(theirs, peer) for peer in theirs[0] if peer != "gradient"}
    for peer, entry in peers.items():
        entry["ours_over_peer"] = _median(
            a[label]["seconds"] / b[peer]["seconds"] for a, b in zip(ours, theirs, strict=True)
        )
        entry["ours_over_peer_per_gradient"] = _median(
            (a[label]["seconds"] / a["gradient"]["seconds"])
            / (b[peer]["seconds"] / b["gradient"]["seconds"])
            for a, b in zip(ours, theirs, strict=True)
        )
    reference = getattr(side, "reference", None)

    def accuracy(entry):
        if metric != "eigsh" or entry["value"] is None or not reference:
            return ""
        entry["relative_error"] = abs(entry["value"] - reference) / abs(reference)
        return f", rel. error {entry['relative_error']:.1e}"

    def algorithm_note(entry):
        if metric not in tf_metrics.ALGORITHMS:
            return ""
        return (
            f"; {entry['products']:.0f} products, {entry['outside_s'] * 1e3:.0f} ms outside "
            f"products{accuracy(entry)}"
        )

    rec.row(
        sec,
        name,
        f"{title}: tfhess_linop",
        mine["seconds"],
        "s",
        baseline="its gradient",
        baseline_value=_median(r["gradient"]["seconds"] for r in ours),
        ratio=mine["per_gradient"],
        note=f"{len(ours)} rounds" + algorithm_note(mine),
    )
    eligible = {}
    for peer, entry in peers.items():
        rec.row(
            sec,
            name,
            f"{title}: {peer}",
            entry["seconds"],
            "s",
            baseline="its gradient",
            baseline_value=_median(r["gradient"]["seconds"] for r in theirs),
            ratio=entry["per_gradient"],
            note=f"tfhess_linop / {peer} = {entry['ours_over_peer']:.3g}" + algorithm_note(entry),
        )
        if peer in NOT_COMPARABLE:
            continue
        if metric == "eigsh" and entry.get("relative_error", 0.0) > tf_metrics.EIGSH_TOL:
            continue
        eligible[peer] = entry
    if eligible:
        best = min(eligible, key=lambda p: eligible[p]["seconds"])
        entry = eligible[best]
        summary["best_peer"] = best
        rec.row(
            sec,
            name,
            f"{title}: tfhess_linop / best peer",
            mine["seconds"],
            "s",
            baseline=best,
            baseline_value=entry["seconds"],
            ratio=entry["ours_over_peer"],
            target="tfhess_linop / best peer",
            note=f"per-gradient ratio {entry['ours_over_peer_per_gradient']:.3g} "
            f"(ours {mine['per_gradient']:.2f}x our gradient, {best} "
            f"{entry['per_gradient']:.2f}x its gradient)",
        )
    summary["tfhess_linop"] = mine
    summary["peers"] = peers
    summary["title"] = title
    return summary
