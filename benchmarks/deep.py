"""Deep metric learning: one training step, metriclearn (JAX, jitted) vs pytorch-metric-learning.

Same model (MLP 64 -> 256 -> 256 -> 64, ReLU), same optimizer (Adam 1e-3), same loss / miner, same
m-per-class batches (128 = 8 classes x 16) of the standardized digits training split, on CPU. PyTorch
runs with ``torch.set_num_threads(2)``. After one warm-up call each (reported apart: for metriclearn it
is trace + compile), the two step functions alternate round-robin (``benchmarks/_timing.py``) and the
median wall time per step is quoted, with the ratio PML / metriclearn. Both metriclearn programs
donate their state (``donate=True``, as ``fit`` does), so the update is written in place.

Alternating call by call makes each library pay for the other: torch's OpenMP threads keep spinning
after a step and XLA's thread pool likewise, so the next call of the other library starts on a busy
machine. A training loop runs one library back to back, so the scanned epoch is also timed that way
(``_timing.back_to_back``: blocks of calls of one library, blocks alternating, warm-up before each
block), and that ratio is reported too ("back to back").

Run::

    python -m benchmarks.deep            # both libraries, 3 losses, 30 alternating steps each
    python -m benchmarks.deep --steps 60
    python -m benchmarks.deep --quick    # metriclearn only, few steps (smoke test; no torch needed)
    python -m benchmarks.deep --anatomy  # each step with and without its loss, both libraries
    python -m benchmarks.deep --processes 10  # the training-loop ratio in 10 fresh processes
    python -m benchmarks.deep --protocol  # whole 30-epoch runs: fit vs PML's DataLoader loop
    python -m benchmarks.deep --products  # the MLP's 8 products: XLA 2 cores / 1, torch 2 threads / 1

A process keeps the speed it starts with (PML's step in particular runs at one of two or more speeds
from one process to the next), so the ratio of a single run is one draw; ``--processes N`` repeats the
back-to-back training-loop comparison in ``N`` fresh processes and quotes the median ratio, the
extremes and how many processes reach 3x.

``--protocol`` times what a user of each library runs: ``training.fit`` for 30 epochs against PML's
loop over a ``DataLoader`` with its ``MPerClassSampler`` (:func:`pml_train`), whole runs
alternating. It includes what the step comparison leaves out on both sides: PML's data loading and
fit's per-fit and per-epoch work (checks, train state, sampler, history).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import _timing  # noqa: E402
from metriclearn import losses, models, sampling, training  # noqa: E402

BATCH_SIZE = 128
M_PER_CLASS = 16
HIDDEN = (256, 256)
EMBEDDING_DIM = 64
LEARNING_RATE = 1e-3
PRODUCTS_REPS = 50  # products per timed call of --products

# name -> (metriclearn loss, loss kwargs, miner, miner kwargs)
CASES = {
    "contrastive (all pairs)": ("contrastive", {}, None, {}),
    "triplet_margin(0.2) + semihard": (
        "triplet_margin",
        {"margin": 0.2},
        "semihard",
        {"margin": 0.2},
    ),
    "multi_similarity + ms miner": ("multi_similarity", {}, "multi_similarity", {"epsilon": 0.1}),
}


def pml_loss_and_miner(name: str):
    """pytorch-metric-learning's ``(loss, miner or None)`` for a case name (its first word decides)."""
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners as pml_miners

    if name.startswith("contrastive"):
        return pml_losses.ContrastiveLoss(), None
    if name.startswith("triplet"):
        return (
            pml_losses.TripletMarginLoss(margin=0.2),
            pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
        )
    return pml_losses.MultiSimilarityLoss(), pml_miners.MultiSimilarityMiner(epsilon=0.1)


def make_batches(n_steps: int, seed: int = 0):
    """The standardized digits training split and ``n_steps`` m-per-class index batches."""
    X, y, _, _, _ = training.load_split("digits")
    idx = np.asarray(
        sampling.m_per_class_batches(
            jax.random.key(seed), y, m=M_PER_CLASS, batch_size=BATCH_SIZE, n_batches=n_steps
        )
    )
    return X, y, idx


def _batches_and_epoch(steps: int):
    """:func:`make_batches` for ``steps`` calls (at least 8) and its first real epoch
    (``n_train // batch_size`` batches, what one scanned epoch of ``fit`` runs)."""
    X, y, idx = make_batches(max(steps, 8))
    return X, y, idx, idx[: max(len(y) // BATCH_SIZE, 1)]


def protocol_model():
    """The protocol's MLP (PyTorch's init, as PML's): the same network for every case."""
    return models.build_model(
        "mlp", hidden=HIDDEN, embedding_dim=EMBEDDING_DIM, initializer="torch"
    )


def _model_and_spec(case: str):
    """:func:`protocol_model` and the case's loss spec, as ``fit`` builds them."""
    loss, loss_kw, miner, miner_kw = CASES[case]
    return protocol_model(), losses.build(
        loss, miner=miner, miner_kwargs=miner_kw or None, **loss_kw
    )


def metriclearn_stepper(case: str, X: np.ndarray, y: np.ndarray, idx: np.ndarray):
    """A zero-argument callable doing one jitted metriclearn training step on the next batch."""
    model, spec = _model_and_spec(case)
    opt = optax.adam(LEARNING_RATE)
    state = {"s": training.create_train_state(0, model, spec, opt, X[:1])}
    # the state belongs to this stepper: donate it so each step updates it in place
    step = training.make_train_step(model, spec, opt, donate=True)
    xs = [jax.device_put(jnp.asarray(X[b])) for b in idx]
    ys = [jax.device_put(jnp.asarray(y[b], jnp.int32)) for b in idx]
    counter = {"i": 0}

    def run():
        i = counter["i"] % len(xs)
        counter["i"] += 1
        state["s"], metrics = step(state["s"], xs[i], ys[i])
        return metrics["loss"]

    return run


def _mean_square(embeddings):
    """The stand-in loss of :func:`anatomy`: no pairs, an elementwise gradient."""
    return (embeddings * embeddings).mean()


def metriclearn_epoch(
    case: str, X: np.ndarray, y: np.ndarray, idx: np.ndarray, *, loss_free: bool = False
):
    """A zero-argument callable running one scanned epoch over all of ``idx`` (what ``fit`` runs).

    The data stay on device and the epoch is one jitted ``lax.scan`` over the batches, so a step pays
    no Python dispatch; divide its time by ``len(idx)`` for milliseconds per step. ``loss_free``
    replaces the case's loss by the mean square of the embeddings (the rest of the step is kept:
    model, Adam, distance curves and finiteness checks).
    """
    model, spec = _model_and_spec(case)
    if loss_free:
        spec = spec._replace(apply=lambda params, emb, labels, key: _mean_square(emb))
    opt = optax.adam(LEARNING_RATE)
    state = {"s": training.create_train_state(0, model, spec, opt, X[:1])}
    epoch = training.make_train_epoch(model, spec, opt, donate=True)
    Xd, yd = jnp.asarray(X), jnp.asarray(y, jnp.int32)
    batches = jnp.asarray(idx, jnp.int32)
    # compiled once as fit compiles it: the arguments are checked here, not in every timed call
    compiled = epoch.lower(state["s"], Xd, yd, batches).compile()

    def run():
        state["s"], metrics = compiled(state["s"], Xd, yd, batches)
        return metrics["loss"]

    return run


def metriclearn_bare_epoch(X: np.ndarray, idx: np.ndarray):
    """A zero-argument callable scanning the bare network over ``idx``: MLP forward and backward on
    :func:`_mean_square` and Adam, nothing else (no loss, distance curves, finiteness checks or keys).

    The floor under any training step of this model and optimizer: what :func:`anatomy` compares
    pytorch-metric-learning's step with to bound the speed-up.
    """
    model = protocol_model()
    opt = optax.adam(LEARNING_RATE)
    params = model.init(jax.random.key(0), jnp.asarray(X[:1]))
    carry = {"c": (params, opt.init(params))}
    Xd, batches = jnp.asarray(X), jnp.asarray(idx, jnp.int32)

    def body(c, b):
        p, s = c
        loss, g = jax.value_and_grad(lambda q: _mean_square(model.apply(q, Xd[b])))(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    epoch = jax.jit(lambda c, b: jax.lax.scan(body, c, b), donate_argnums=0)

    def run():
        carry["c"], losses = epoch(carry["c"], batches)
        return losses

    return run


def pml_mlp(in_features: int):
    """The protocol's torch MLP: ``in -> 256 -> ReLU -> 256 -> ReLU -> 64`` (PyTorch's default init)."""
    import torch

    dims = (in_features, *HIDDEN)
    layers: list = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(dims[-1], EMBEDDING_DIM))
    return torch.nn.Sequential(*layers)


def _pml_setup(case: str, seed: int, in_features: int, init_params=None):
    """``(network, Adam, loss, miner or None)`` of PML's side: 2 torch threads, ``torch.manual_seed``,
    :func:`pml_mlp` (its initial weights replaced by ``init_params``, our MLP's, if given)."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    net = pml_mlp(in_features)
    if init_params is not None:
        load_flax_mlp(net, init_params)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    return (net, opt, *pml_loss_and_miner(case))


def pml_stepper(
    case: str, X: np.ndarray, y: np.ndarray, idx: np.ndarray, *, loss_free: bool = False
):
    """A zero-argument callable doing one pytorch-metric-learning training step on the next batch.

    ``loss_free``: the mean square of the embeddings instead of the case's loss and miner.
    """
    import torch

    net, opt, loss_fn, miner = _pml_setup(case, 0, X.shape[1])
    if loss_free:
        loss_fn, miner = (lambda emb, labels: _mean_square(emb)), None
    xs = [torch.from_numpy(np.ascontiguousarray(X[b])) for b in idx]
    ys = [torch.from_numpy(np.asarray(y[b], np.int64)) for b in idx]
    counter = {"i": 0}

    def run():
        i = counter["i"] % len(xs)
        counter["i"] += 1
        opt.zero_grad()
        emb = net(xs[i])
        if miner is None:
            loss = loss_fn(emb, ys[i])
        else:
            loss = loss_fn(emb, ys[i], miner(emb, ys[i]))
        loss.backward()
        opt.step()
        return float(loss.detach())

    return run


def pml_train(
    case: str,
    seed: int,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    step_hook=None,
    init_params=None,
    batches=None,
    record: list | None = None,
    numpy_seed: int | None = None,
):
    """PML's training loop as its users write it; returns the trained torch network.

    The protocol of ANCHORS.md: :func:`pml_mlp`, Adam, the case's loss and miner
    (:func:`pml_loss_and_miner`: its first word decides), and a ``DataLoader`` over a
    ``TensorDataset`` with PML's ``MPerClassSampler(m=16, batch_size=128,
    length_before_new_iter=len(y))``, ``epochs`` passes. Seeded with ``torch.manual_seed(seed)`` and
    ``np.random.seed(seed)`` (the sampler draws from NumPy's global generator), or with
    ``np.random.seed(numpy_seed)`` if given. PyTorch's CPU generator and NumPy's legacy one are both
    MT19937 and give the same raw stream for the same integer seed, so the protocol's initial weights
    and batches are drawn from one stream; a different ``numpy_seed`` uncouples them.

    ``step_hook(embeddings, labels, loss, d loss / d embeddings)``, if given, sees every training
    step's batch (NumPy arrays and a float) after the backward pass.

    For taking the two libraries apart (``deep_quality --decompose``): ``init_params`` (our MLP's
    Flax parameters) replace the network's initial weights; ``batches(epoch)`` (an int array
    ``[n_batches, 128]``) replaces the sampler; ``record`` receives each epoch's index array. With
    either of the last two the loop indexes the tensors itself (the sampler's epoch drawn whole, as
    the ``DataLoader`` draws it: the same batches and the same run).
    """
    import torch
    from pytorch_metric_learning import samplers

    # PML's sampler draws from the global NumPy generator
    np.random.seed(seed if numpy_seed is None else numpy_seed)  # noqa: NPY002
    net, opt, loss_fn, miner = _pml_setup(case, seed, X.shape[1], init_params)
    sampler = samplers.MPerClassSampler(
        y, m=M_PER_CLASS, batch_size=BATCH_SIZE, length_before_new_iter=len(y)
    )
    data = torch.utils.data.TensorDataset(
        torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    )
    loader = torch.utils.data.DataLoader(
        data, batch_size=BATCH_SIZE, sampler=sampler, drop_last=True
    )
    Xt, yt = data.tensors

    def epoch_batches(epoch: int):
        if batches is None and record is None:
            return loader
        idx = batches(epoch) if batches is not None else np.asarray(list(iter(sampler)))
        idx = np.asarray(idx, np.int64).reshape(-1, BATCH_SIZE)
        if record is not None:
            record.append(idx)
        return ((Xt[torch.from_numpy(b)], yt[torch.from_numpy(b)]) for b in idx)

    for epoch in range(epochs):
        for xb, yb in epoch_batches(epoch):
            opt.zero_grad()
            emb = net(xb)
            if step_hook is not None:
                emb.retain_grad()
            value = loss_fn(emb, yb) if miner is None else loss_fn(emb, yb, miner(emb, yb))
            value.backward()
            if step_hook is not None:
                step_hook(emb.detach().numpy(), yb.numpy(), float(value.detach()), emb.grad.numpy())
            opt.step()
    return net


_FLAX_LAYERS = (("dense_0",), ("dense_1",), ("head", "embedding"))  # torch layers 0, 2, 4


def load_flax_mlp(net, params) -> None:
    """Copy our protocol MLP's Flax parameters into :func:`pml_mlp`'s torch network (in place)."""
    import torch

    with torch.no_grad():
        for layer, path in zip(net[::2], _FLAX_LAYERS):
            p = params["params"]
            for name in path:
                p = p[name]
            layer.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))


def flax_mlp_params(net) -> dict:
    """:func:`pml_mlp`'s torch weights as our protocol MLP's Flax parameters."""
    out: dict = {}
    for layer, path in zip(net[::2], _FLAX_LAYERS):
        leaf = {
            "kernel": jnp.asarray(layer.weight.detach().numpy().T),
            "bias": jnp.asarray(layer.bias.detach().numpy()),
        }
        out.update({path[0]: {path[1]: leaf}} if len(path) == 2 else {path[0]: leaf})
    return {"params": out}


PROTOCOL_HEADER = [
    "loss / miner",
    "PML ms/step (its DataLoader + MPerClassSampler loop)",
    "metriclearn ms/step (training.fit)",
    "metriclearn first fit s (with compile)",
    "speed-up (PML loop / fit)",
]


PROTOCOL_EPOCHS, PROTOCOL_REPEATS = 30, 5


def protocol(
    epochs: int = PROTOCOL_EPOCHS, repeats: int = PROTOCOL_REPEATS, cases: list[str] | None = None
) -> list[list]:
    """Each library's whole training run as its users start it, end to end: rows of
    :data:`PROTOCOL_HEADER`.

    metriclearn: one call of :func:`metriclearn.training.fit` (checks, train state, the sampler, the
    scanned epochs, the history; no held-out split); PML: :func:`pml_train` (network, optimizer,
    ``DataLoader`` with its sampler, the steps). Both on the digits training split for ``epochs``
    epochs, alternating (``_timing.alternate``), medians over ``repeats`` runs divided by the steps
    run. fit's first call, which compiles the epoch, is reported apart; later calls reuse the program.
    """
    X, y, _, _, _ = training.load_split("digits")
    steps = epochs * max(len(y) // BATCH_SIZE, 1)
    rows = []
    for case in cases or list(CASES):
        model, spec = _model_and_spec(case)
        opt = optax.adam(LEARNING_RATE)
        candidates = {
            "ours": lambda m=model, s=spec, o=opt: (
                training.fit(m, s, o, X, y, epochs=epochs, progress=False).state.params
            ),
            "pml": lambda case=case: pml_train(case, 0, X, y, epochs=epochs),
        }
        t = _timing.alternate(candidates, repeats=repeats, warmup=1)
        ours_ms = 1e3 * t["ours"]["median_s"] / steps
        pml_ms = 1e3 * t["pml"]["median_s"] / steps
        rows.append([case, pml_ms, ours_ms, t["ours"]["first_s"], _timing.ratio(pml_ms, ours_ms)])
    return rows


def run(steps: int = 30, quick: bool = False, cases: list[str] | None = None) -> list[list]:
    """Time every case (or those named); return the table rows (also printed by ``main``)."""
    X, y, idx, epoch_idx = _batches_and_epoch(steps)
    rows = []
    for case in cases or list(CASES):
        candidates = {
            "metriclearn": metriclearn_stepper(case, X, y, idx),
            "epoch": metriclearn_epoch(case, X, y, epoch_idx),
        }
        if not quick:
            candidates["pml"] = pml_stepper(case, X, y, idx)
        res = _timing.alternate(candidates, repeats=steps, warmup=2)
        ml = res["metriclearn"]
        scanned_ms = 1e3 * res["epoch"]["median_s"] / len(epoch_idx)
        row = [case, 1e3 * ml["median_s"], scanned_ms, ml["first_s"]]
        if not quick:
            pml = res["pml"]
            row[1:1] = [1e3 * pml["median_s"]]
            pml_b2b, ours_b2b = _loop_ms(
                candidates["pml"], candidates["epoch"], len(epoch_idx), steps
            )
            row += [
                1e3 * pml["first_s"],
                pml_b2b,
                ours_b2b,
                _timing.ratio(pml["median_s"], ml["median_s"]),
                _timing.ratio(1e3 * pml["median_s"], scanned_ms),
                _timing.ratio(pml_b2b, ours_b2b),
            ]
        rows.append(row)
    return rows


def _loop_ms(pml_step, our_epoch, epoch_steps: int, steps: int) -> tuple[float, float]:
    """``(PML ms/step, our ms/step)``, each library back to back (``_timing.back_to_back``): runs of
    PML steps against our scanned epochs of ``epoch_steps`` steps, blocks alternating."""
    blocks = _timing.back_to_back(
        {"epoch": our_epoch, "pml": pml_step}, calls=max(steps // 3, 3), rounds=3
    )
    return 1e3 * blocks["pml"], 1e3 * blocks["epoch"] / epoch_steps


def training_loop(
    steps: int = 30, cases: list[str] | None = None, burn_in: int = 0
) -> dict[str, list[float]]:
    """``{case: [PML ms/step, our ms/step]}`` of the training loops, each library back to back.

    ``burn_in`` trains both networks that many steps (on batches of their own, before the timed
    ones) first. PML's step costs what its miner returns, and mined tuples become rarer as the
    network learns (triplet + semihard, multi-similarity); our step costs the same at every stage.
    Without a burn-in the timed steps are the first few dozen of training, PML's dearest.
    """
    if burn_in < 0:
        raise ValueError(f"burn_in must be >= 0, got {burn_in}")
    X, y, idx = make_batches(max(steps, 8) + burn_in)
    epoch_idx = idx[: max(len(y) // BATCH_SIZE, 1)]
    out = {}
    for case in cases or list(CASES):
        pml_step = pml_stepper(case, X, y, idx)
        our_epoch = metriclearn_epoch(case, X, y, epoch_idx)
        _timing.block(our_epoch())  # compile outside the timed blocks
        for _ in range(burn_in):
            pml_step()
        for _ in range(-(-burn_in // len(epoch_idx))):
            _timing.block(our_epoch())
        out[case] = list(_loop_ms(pml_step, our_epoch, len(epoch_idx), steps))
    return out


PROCESSES_HEADER = [
    "loss / miner",
    "PML ms/step (median of processes)",
    "metriclearn ms/step (median of processes)",
    "speed-up, median of processes",
    "speed-up, lowest process",
    "speed-up, highest process",
    "processes at >= 3x",
]


def summarize_processes(per_process: list[dict[str, list[float]]]) -> list[list]:
    """Rows of :data:`PROCESSES_HEADER` from each process's :func:`training_loop` result.

    The speed-up of a process is its own PML / metriclearn ratio; the table quotes the median, the
    extremes, and how many processes reached the 3x target.
    """
    if not per_process:
        raise ValueError("no process results to summarize")
    rows = []
    for case in per_process[0]:
        pml = [r[case][0] for r in per_process]
        ours = [r[case][1] for r in per_process]
        ratios = [_timing.ratio(a, b) for a, b in zip(pml, ours)]
        rows.append(
            [
                case,
                statistics.median(pml),
                statistics.median(ours),
                statistics.median(ratios),
                min(ratios),
                max(ratios),
                f"{sum(r >= 3.0 for r in ratios)}/{len(ratios)}",
            ]
        )
    return rows


def _child_json(args: list[str], what: str, cpus: set[int] | None = None) -> Any:
    """Run ``python -m benchmarks.deep *args`` in a fresh process and parse the JSON of its last
    stdout line. With ``cpus``, the child pins itself to them before it imports JAX."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "benchmarks.deep"]
    if cpus is not None:
        cmd[1:] = [
            "-c",
            f"import os, runpy; os.sched_setaffinity(0, {sorted(cpus)}); "
            "runpy.run_module('benchmarks.deep', run_name='__main__')",
        ]
    proc = subprocess.run(
        [*cmd, *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def processes(
    n: int, steps: int = 30, cases: list[str] | None = None, log=print, burn_in: int = 0
) -> list[list]:
    """:func:`training_loop` in ``n`` fresh Python processes, one after the other; rows of
    :func:`summarize_processes`.

    A process keeps the speed it starts with: pytorch-metric-learning's step in particular settles
    into one of (at least) two speeds per process (contrastive medians 2.0-4.4 ms seen on this
    machine), so one process gives one draw of the ratio. Fresh processes sample that spread.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    args = ["--steps", str(steps), "--burn-in", str(burn_in), "--loop-json"]
    if cases:
        args += ["--cases", ",".join(cases)]
    results = []
    for i in range(n):
        results.append(_child_json(args, f"benchmark process {i}"))
        ratios = ", ".join(
            f"{case.split()[0]} {_timing.ratio(*v):.2f}x" for case, v in results[-1].items()
        )
        log(f"  process {i + 1}/{n}: speed-ups {ratios}")
    return summarize_processes(results)


def anatomy(steps: int = 30, cases: list[str] | None = None) -> list[list]:
    """Where each library's step time goes: the whole step, and the step with a loss-free stand-in.

    Per case, five candidates run back to back (``_timing.back_to_back``): metriclearn's scanned epoch
    and PML's step, each with the case's loss and with :func:`_mean_square` instead (the model, Adam
    and, for metriclearn, the distance curves and finiteness checks stay), and the bare network of
    :func:`metriclearn_bare_epoch`. ``PML step / our loss-free step`` bounds the speed-up any loss
    implementation of ours could reach on this machine; ``PML step / bare network`` bounds any step.
    """
    X, y, idx, epoch_idx = _batches_and_epoch(steps)
    rows = []
    for case in cases or list(CASES):
        candidates = {
            "ours": metriclearn_epoch(case, X, y, epoch_idx),
            "ours_free": metriclearn_epoch(case, X, y, epoch_idx, loss_free=True),
            "pml": pml_stepper(case, X, y, idx),
            "pml_free": pml_stepper(case, X, y, idx, loss_free=True),
            "ours_bare": metriclearn_bare_epoch(X, epoch_idx),
        }
        t = _timing.back_to_back(candidates, calls=max(steps // 3, 3), rounds=3)
        ms = {k: 1e3 * v / (len(epoch_idx) if k.startswith("ours") else 1) for k, v in t.items()}
        rows.append(
            [
                case,
                ms["ours"],
                ms["ours_free"],
                ms["ours"] - ms["ours_free"],
                ms["pml"],
                ms["pml_free"],
                ms["pml"] - ms["pml_free"],
                _timing.ratio(ms["pml"], ms["ours"]),
                _timing.ratio(ms["pml"], ms["ours_free"]),
                ms["ours_bare"],
                _timing.ratio(ms["pml"], ms["ours_bare"]),
            ]
        )
    return rows


def mlp_products(batch: int = BATCH_SIZE) -> list[tuple[str, int, int, int, str]]:
    """The protocol MLP's matrix products in one training step: ``(name, m, k, n, layout)``.

    ``m x k`` times ``k x n``; ``layout`` says how the operands are stored, as JAX's autodiff of a
    Flax ``Dense`` (kernel ``in x out``) uses them: ``nn`` ``x W``; ``tn`` ``x^T g``, the weight
    gradient, contracting over the batch (``x`` stored ``k x m``); ``nt`` ``g W^T``, the input
    gradient (``W`` stored ``n x k``). Three forward products, a weight gradient per layer and an
    input gradient for every layer but the first: eight.
    """
    widths = (64, *HIDDEN, EMBEDDING_DIM)
    layers = list(zip(widths[:-1], widths[1:]))
    out = [(f"layer {i + 1} forward x W", batch, a, b, "nn") for i, (a, b) in enumerate(layers)]
    for i in reversed(range(len(layers))):
        a, b = layers[i]
        out.append((f"layer {i + 1} weight gradient x^T g", a, batch, b, "tn"))
        if i > 0:
            out.append((f"layer {i + 1} input gradient g W^T", batch, b, a, "nt"))
    return out


def _operand_shapes(m: int, k: int, n: int, layout: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Stored shapes of the two operands of an ``m x k`` by ``k x n`` product."""
    return ((k, m) if layout == "tn" else (m, k)), ((n, k) if layout == "nt" else (k, n))


def _xla_product(m: int, k: int, n: int, layout: str, reps: int):
    """A zero-argument callable running ``reps`` such products in one jitted scan, a new left operand
    per iteration, and returning the last (XLA runs every iteration of a loop); divide by ``reps``.

    Each product writes its own output, as ``torch.mm(out=)`` does: accumulating the products instead
    would add an elementwise pass (up to 40 us on the 256-wide products) that neither library's step
    pays.
    """
    rng = np.random.default_rng(0)
    a_shape, b_shape = _operand_shapes(m, k, n, layout)
    lhs = jnp.asarray(rng.standard_normal((reps, *a_shape), dtype=np.float32))
    rhs = jnp.asarray(rng.standard_normal(b_shape, dtype=np.float32))

    def product(a, b):
        return (a.T if layout == "tn" else a) @ (b.T if layout == "nt" else b)

    run = jax.jit(
        lambda xs, b: jax.lax.scan(lambda c, a: (product(a, b), None), jnp.zeros((m, n)), xs)[0]
    )
    return lambda: run(lhs, rhs)


def _torch_product(m: int, k: int, n: int, layout: str, reps: int, threads: int):
    """A zero-argument callable doing ``reps`` ``torch.mm`` calls on ``threads`` threads, operands
    stored as in :func:`_xla_product` (transposes as views)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a_shape, b_shape = _operand_shapes(m, k, n, layout)
    a, b = torch.randn(a_shape, generator=gen), torch.randn(b_shape, generator=gen)
    a, b = (a.t() if layout == "tn" else a), (b.t() if layout == "nt" else b)
    out = torch.empty(m, n)

    def run():
        torch.set_num_threads(threads)
        for _ in range(reps):
            torch.mm(a, b, out=out)
        torch.set_num_threads(2)
        return out

    return run


def xla_products_us(reps: int = PRODUCTS_REPS, rounds: int = 3) -> list[float]:
    """Microseconds per product of :func:`mlp_products` under XLA, each timed back to back."""
    cands = {name: _xla_product(m, k, n, lay, reps) for name, m, k, n, lay in mlp_products()}
    t = _timing.back_to_back(cands, calls=5, rounds=rounds, warmup=2)
    return [1e6 * t[name] / reps for name, *_ in mlp_products()]


def products(reps: int = PRODUCTS_REPS, rounds: int = 3, one_core: bool = True) -> list[list]:
    """The MLP's eight products under XLA (this process; and, if ``one_core``, a fresh process pinned
    to one CPU) and under PyTorch with 2 and 1 threads: rows of :data:`PRODUCTS_HEADER`, a total last.

    Shows where the bare network's time goes (:func:`anatomy`'s floor): if XLA's time on two cores
    equals its time on one and PyTorch's on one thread, XLA runs the product on one thread, and the
    gap to PyTorch's two threads is a kernel-threading gap, not the machine's.
    """
    specs = mlp_products()
    ours = xla_products_us(reps, rounds)
    pinned = (
        _child_json(
            ["--products-json", str(reps)],
            "one-core XLA process",
            cpus={min(os.sched_getaffinity(0))},
        )
        if one_core and hasattr(os, "sched_setaffinity")
        else [float("nan")] * len(specs)
    )
    cands = {}
    for name, m, k, n, lay in specs:
        for threads in (2, 1):
            cands[name, threads] = _torch_product(m, k, n, lay, reps, threads)
    t = _timing.back_to_back(cands, calls=5, rounds=rounds, warmup=2)
    rows = []
    for (name, m, k, n, lay), xla2, xla1 in zip(specs, ours, pinned):
        t2, t1 = 1e6 * t[name, 2] / reps, 1e6 * t[name, 1] / reps
        rows.append([name, f"{m}x{k}x{n} ({lay})", xla2, xla1, t2, t1, _timing.ratio(xla2, t2)])
    totals = [sum(r[c] for r in rows) for c in range(2, 6)]
    rows.append(["all eight", "", *totals, _timing.ratio(totals[0], totals[2])])
    return rows


PRODUCTS_HEADER = [
    "product",
    "m x k x n (operand layout)",
    "XLA us (2 cores)",
    "XLA us (pinned to 1 core)",
    "torch us (2 threads)",
    "torch us (1 thread)",
    "XLA / torch 2 threads",
]


ANATOMY_HEADER = [
    "loss / miner",
    "metriclearn ms/step",
    "metriclearn ms/step, loss-free",
    "metriclearn loss ms",
    "PML ms/step",
    "PML ms/step, loss-free",
    "PML loss + miner ms",
    "speed-up",
    "speed-up bound (PML step / our loss-free step)",
    "metriclearn bare network ms/step (MLP + Adam only)",
    "speed-up bound (PML step / bare network)",
]


def table_header(quick: bool) -> list[str]:
    """Column names of :func:`run`'s rows."""
    ours = ["metriclearn ms/step (jitted step)", "metriclearn ms/step (scanned epoch, as fit runs)"]
    if quick:
        return ["loss / miner", *ours, "metriclearn compile+1st s"]
    return [
        "loss / miner",
        "PML ms/step",
        *ours,
        "metriclearn compile+1st s",
        "PML 1st step ms",
        "PML ms/step, back to back",
        "metriclearn ms/step, scanned epochs back to back",
        "speed-up, single step (PML / metriclearn)",
        "speed-up, training loop (PML / scanned epoch)",
        "speed-up, training loop, back to back",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,  # --quick's 5 only where --steps is not given
        help="alternating timed steps per case (default 30, --quick 5)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="metriclearn only, 5 steps (unless --steps is given)"
    )
    parser.add_argument(
        "--anatomy",
        action="store_true",
        help="split each step into loss and the rest (model, Adam), both libraries, back to back",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="the training-loop comparison in N fresh processes; medians over processes",
    )
    parser.add_argument(
        "--protocol",
        action="store_true",
        help="whole 30-epoch runs: training.fit against PML's DataLoader loop, alternating",
    )
    parser.add_argument(
        "--products",
        action="store_true",
        help="the MLP's eight matrix products: XLA on 2 cores and on 1, torch on 2 threads and 1",
    )
    parser.add_argument(
        "--burn-in",
        type=int,
        default=0,
        help="with --processes: train both networks this many steps before timing (a later stage "
        "of training, where PML mines fewer tuples; a 30-epoch digits run has 270 steps)",
    )
    parser.add_argument("--cases", default="", help="comma list of case names (default: all)")
    parser.add_argument("--loop-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--products-json", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # each of these prints its own table and returns: together, one header went over another's table
    modes = [
        flag
        for flag, on in (
            ("--anatomy", args.anatomy),
            ("--processes", args.processes > 0),
            ("--protocol", args.protocol),
            ("--products", args.products),
        )
        if on
    ]
    if len(modes) > 1:
        parser.error(f"{' and '.join(modes)} are separate modes; give one")
    if args.steps is not None and (args.protocol or args.products):
        parser.error(
            f"--steps does not apply to {modes[0]} (--protocol: whole {PROTOCOL_EPOCHS}-epoch runs; "
            "--products: a fixed number of products)"
        )
    if args.cases and args.products:
        parser.error("--cases does not apply to --products (the MLP's products, no loss)")
    if args.quick and (args.anatomy or args.processes or args.protocol or args.products):
        parser.error(
            "--anatomy, --processes, --protocol and --products need PyTorch (and, but for "
            "--products, pytorch-metric-learning); no --quick mode"
        )
    if args.processes < 0:
        parser.error("--processes must be >= 0")
    if args.burn_in < 0:
        parser.error("--burn-in must be >= 0")
    if args.burn_in and not (args.processes or args.loop_json):
        parser.error("--burn-in applies to --processes only")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] or None
    unknown = sorted(set(cases or ()) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    if args.steps is None:  # --quick's 5 steps unless --steps was given
        args.steps = 5 if args.quick else 30
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    steps = args.steps
    if args.loop_json:  # one process of --processes: a JSON line on stdout
        print(json.dumps(training_loop(steps=steps, cases=cases, burn_in=args.burn_in)))
        return 0
    if args.products_json:  # the pinned XLA process of --products: a JSON line on stdout
        print(json.dumps(xla_products_us(reps=args.products_json)))
        return 0
    print(_timing.machine_line())
    if args.products:
        import torch

        print(
            f"torch {torch.__version__}\nthe protocol MLP's eight products at batch {BATCH_SIZE}, "
            f"{PRODUCTS_REPS} per timed call, blocks back to back, medians\n"
        )
        print(_timing.markdown_table(PRODUCTS_HEADER, products()))
        return 0
    if not args.quick:
        import pytorch_metric_learning
        import torch

        print(
            f"torch {torch.__version__} (2 threads) | pytorch-metric-learning {pytorch_metric_learning.__version__}"
        )
    if args.protocol:
        timing = (
            f"whole runs of {PROTOCOL_EPOCHS} epochs, the libraries alternating, medians of "
            f"{PROTOCOL_REPEATS} runs each"
        )
    elif args.anatomy or args.processes:
        timing = f"blocks of {max(steps // 3, 3)} steps back to back, 3 rounds, medians"
    else:
        timing = f"median of {steps} alternating steps"
    if args.processes:
        timing += f"; in each of {args.processes} fresh processes"
        if args.burn_in:
            timing += f", after {args.burn_in} training steps of both networks"
    print(
        f"digits train split, MLP 64-256-256-64, Adam {LEARNING_RATE}, batch {BATCH_SIZE} "
        f"({M_PER_CLASS} per class), {timing}\n"
    )
    if args.anatomy:
        print(_timing.markdown_table(ANATOMY_HEADER, anatomy(steps=steps, cases=cases)))
        return 0
    if args.protocol:
        print(_timing.markdown_table(PROTOCOL_HEADER, protocol(cases=cases)))
        return 0
    if args.processes:
        rows = processes(args.processes, steps=steps, cases=cases, burn_in=args.burn_in)
        print("\n" + _timing.markdown_table(PROCESSES_HEADER, rows))
        return 0
    rows = run(steps=steps, quick=args.quick, cases=cases)
    header = table_header(args.quick)
    print(_timing.markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
