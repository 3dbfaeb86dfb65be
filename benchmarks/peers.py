"""Optional peers on the 784-128-10 MLP: JAX and curvlinops (PyTorch).

Used only when importable; nothing here is installed by the project. Each
builder returns ``{"gradient": f, "hvp": g}`` of zero-argument functions
on the same architecture, data sizes and float32 dtype as ``cases``.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np


def build(name, case):
    return {"jax": _jax, "curvlinops": _curvlinops}[name](case)


def _data(case):
    rng = np.random.default_rng(case.seed)
    sizes = case.layers
    x = rng.standard_normal((case.samples, sizes[0])).astype("float32")
    y = rng.integers(0, sizes[-1], case.samples).astype("int32")
    weights = []
    for fan_in, fan_out in pairwise(sizes):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype("float32"))
        weights.append(np.zeros(fan_out, dtype="float32"))
    return x, y, weights


def _jax(case):
    import jax
    import jax.numpy as jnp

    x, y, weights = _data(case)
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = [jnp.asarray(w) for w in weights]

    def loss(params):
        h = x
        for i in range(0, len(params) - 2, 2):
            h = jnp.tanh(h @ params[i] + params[i + 1])
        logits = h @ params[-2] + params[-1]
        log_p = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))

    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])
    v = [
        jnp.asarray(np.random.default_rng(7).standard_normal(w.shape).astype("float32"))
        for w in weights
    ]
    return {
        "gradient": lambda: jax.block_until_ready(grad(params)),
        "hvp": lambda: jax.block_until_ready(hvp(params, v)),
    }


def _curvlinops(case):
    import torch
    from curvlinops import HessianLinearOperator

    x, y, weights = _data(case)
    sizes = case.layers
    layers = []
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        linear = torch.nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))
            linear.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    loss = torch.nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(x), torch.from_numpy(y).long()
    params = [p for p in model.parameters() if p.requires_grad]
    H = HessianLinearOperator(model, loss, params, [(X, Y)])
    v = np.random.default_rng(7).standard_normal(H.shape[0]).astype("float32")

    def gradient():
        model.zero_grad()
        loss(model(X), Y).backward()

    return {"gradient": gradient, "hvp": lambda: H @ v}
