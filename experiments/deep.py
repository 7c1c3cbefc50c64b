r"""Deep metric learning experiment: train an embedding network, evaluate retrieval, write the results.

Run (the ANCHORS.md protocol on digits, triplet loss with semi-hard mining)::

    python -m experiments.deep --dataset=digits --loss=triplet_margin --loss_kwargs='{"margin": 0.2}' \
        --miner=semihard --miner_kwargs='{"margin": 0.2}' --model=mlp --hidden=256,256 \
        --embedding_dim=64 --batch_size=128 --m_per_class=16 --learning_rate=1e-3 --epochs=30 \
        --workdir=/tmp/deep_digits_triplet

Expected (30 % held-out split): seed 0 gives P@1 0.963, MAP@R 0.860; over seeds 0-59 the mean is
P@1 0.971, MAP@R 0.874, and pytorch-metric-learning's on the same protocol 0.972 / 0.874 (README,
``benchmarks/results/deep_quality.md``).

Writes ``config.json``, ``metrics.json``, ``history.csv``, ``distance_curves.png`` (and
``checkpoints/`` with ``--checkpoint_every``) into ``--workdir``. Unknown dataset / model / loss / miner
/ optimizer names exit with status 1 and a message naming the flag and the valid names. The flags only
build a config; the work is :func:`metriclearn.training.train_and_evaluate`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from absl import app, flags

from experiments import check_output_dir, exit_with_help

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> flags.FlagValues:
    """Define this entry point's flags on ``flag_values`` (the global ``FLAGS`` when run as a script).

    Flags are defined only when the module runs as ``__main__`` (or when a caller asks, e.g. a test
    with a fresh ``flags.FlagValues()``), so importing several entry points in one process never
    defines a flag twice.
    """
    if "loss_kwargs" in flag_values:
        return flag_values
    flags.DEFINE_string(
        "dataset",
        "digits",
        "data set: iris, wine, breast_cancer, digits, mnist1d, synthetic",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "loss", "contrastive", "loss name (metriclearn.losses.LOSSES)", flag_values=flag_values
    )
    flags.DEFINE_string(
        "loss_kwargs",
        "{}",
        "loss keyword arguments as JSON, e.g. '{\"margin\": 0.2}'",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "miner", "none", "miner name (metriclearn.miners.MINERS) or 'none'", flag_values=flag_values
    )
    flags.DEFINE_string(
        "miner_kwargs", "{}", "miner keyword arguments as JSON", flag_values=flag_values
    )
    flags.DEFINE_string(
        "model", "mlp", "model name (metriclearn.models.MODELS)", flag_values=flag_values
    )
    flags.DEFINE_list(
        "hidden", ["256", "256"], "hidden widths, comma separated", flag_values=flag_values
    )
    flags.DEFINE_integer("embedding_dim", 64, "embedding dimension", flag_values=flag_values)
    flags.DEFINE_boolean(
        "normalize_embeddings", False, "L2-normalize the model's output", flag_values=flag_values
    )
    flags.DEFINE_float("dropout", 0.0, "dropout rate of the hidden layers", flag_values=flag_values)
    flags.DEFINE_string(
        "initializer",
        "torch",
        "dense-layer init of mlp/resmlp: torch or lecun",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "batch_size", 128, "batch size (multiple of m_per_class)", flag_values=flag_values
    )
    flags.DEFINE_integer("m_per_class", 16, "samples per class in a batch", flag_values=flag_values)
    flags.DEFINE_integer(
        "n_batches",
        None,
        "steps per epoch (default n_train // batch_size)",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "optimizer", "adam", "optimizer: adam, adamw, sgd, rmsprop", flag_values=flag_values
    )
    flags.DEFINE_float("learning_rate", 1e-3, "learning rate", flag_values=flag_values)
    flags.DEFINE_float("weight_decay", 0.0, "weight decay", flag_values=flag_values)
    flags.DEFINE_integer("epochs", 30, "epochs", flag_values=flag_values)
    flags.DEFINE_integer(
        "seed",
        0,
        "PRNG seed (initialisation, sampling, stochastic miners)",
        flag_values=flag_values,
    )
    flags.DEFINE_string("workdir", None, "output directory", flag_values=flag_values)
    flags.DEFINE_integer(
        "eval_every",
        5,
        "evaluate on the held-out split every N epochs (and at the end)",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "checkpoint_every",
        0,
        "orbax checkpoint every N epochs (0: none); resumes",
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "test_size",
        0.3,
        "held-out fraction (data sets without an official test split)",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "dataset_kwargs", "{}", "options of datasets.load as JSON", flag_values=flag_values
    )
    flags.DEFINE_boolean("progress", True, "show a progress bar", flag_values=flag_values)
    flags.DEFINE_integer(
        "devices",
        1,
        "data-parallel devices (batch sharded; on CPU: simulated devices)",
        flag_values=flag_values,
    )

    return flag_values


def _check_name(flag: str, value: str, valid) -> None:
    if value not in valid:
        raise app.UsageError(
            f"--{flag}={value!r} is not a valid {flag}; valid: {', '.join(sorted(valid))}"
        )


def _json_flag(flag: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise app.UsageError(f"--{flag} must be a JSON object, got {text!r}: {err}") from err
    if not isinstance(value, dict):
        raise app.UsageError(f"--{flag} must be a JSON object, got {text!r}")
    return value


def build_config(fv: flags.FlagValues = FLAGS) -> dict:
    """The run's config from the parsed flags ``fv`` (names validated; raises ``app.UsageError``)."""
    from metriclearn import datasets, losses, miners, models, training

    _check_name("dataset", fv.dataset, datasets.DATASETS)
    _check_name("model", fv.model, models.MODELS)
    _check_name("loss", fv.loss, losses.LOSSES)
    _check_name("miner", fv.miner, [*miners.MINERS, "none"])
    _check_name("optimizer", fv.optimizer, training.OPTIMIZERS)
    _check_name("initializer", fv.initializer, models.INITIALIZERS)
    if not fv.workdir:
        raise app.UsageError("--workdir is required")
    try:
        hidden = [int(h) for h in fv.hidden]
    except ValueError as err:
        raise app.UsageError(f"--hidden must be comma-separated integers, got {fv.hidden}") from err
    return {
        "dataset": fv.dataset,
        "dataset_kwargs": _json_flag("dataset_kwargs", fv.dataset_kwargs),
        "test_size": fv.test_size,
        "model": fv.model,
        "hidden": hidden,
        "embedding_dim": fv.embedding_dim,
        "normalize_embeddings": fv.normalize_embeddings,
        "dropout": fv.dropout,
        "initializer": fv.initializer,
        "loss": fv.loss,
        "loss_kwargs": _json_flag("loss_kwargs", fv.loss_kwargs),
        "miner": None if fv.miner == "none" else fv.miner,
        "miner_kwargs": _json_flag("miner_kwargs", fv.miner_kwargs),
        "optimizer": fv.optimizer,
        "learning_rate": fv.learning_rate,
        "weight_decay": fv.weight_decay,
        "batch_size": fv.batch_size,
        "m_per_class": fv.m_per_class,
        "n_batches": fv.n_batches,
        "epochs": fv.epochs,
        "seed": fv.seed,
        "eval_every": fv.eval_every,
        "checkpoint_every": fv.checkpoint_every,
        "progress": fv.progress,
        "devices": fv.devices,
    }


def run(fv: flags.FlagValues = FLAGS) -> dict:
    """Train and evaluate as the parsed flags ``fv`` say; returns the final metrics."""
    # Simulated CPU devices must be requested before JAX initialises its backend.
    if fv.devices > 1 and "device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={fv.devices}"
        )
    config = build_config(fv)
    check_output_dir(fv.workdir, "--workdir")
    from metriclearn import training

    try:
        metrics = training.train_and_evaluate(config, fv.workdir)
    except ValueError as err:  # bad combinations (miner for a proxy loss, batch vs classes, ...)
        raise app.UsageError(str(err)) from err
    summary = ", ".join(
        f"{k}={metrics[k]:.4f}"
        for k in ("precision_at_1", "r_precision", "map_at_r", "nmi", "steady_ms_per_step")
    )
    print(f"{config['dataset']} / {config['loss']}: {summary} -> {fv.workdir}")
    return metrics


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
    run(FLAGS)


if __name__ == "__main__":
    define_flags()
    if any(arg in ("--help", "-h", "--helpshort", "--helpfull") for arg in sys.argv[1:]):
        exit_with_help(__doc__, full="--helpfull" in sys.argv[1:])
    app.run(main)
