"""Flax (linen) embedding networks ``f(x) -> R^d`` for deep metric learning.

This is the only module of the library that imports Flax. Every model maps a batch of inputs to a batch
of embeddings ``[batch, embedding_dim]`` through a trunk and a linear embedding head, optionally
followed by L2 normalization (NaN-safe: a zero vector stays zero with finite gradients).

* :class:`MLP` -- fully connected trunk (the ANCHORS.md protocol uses ``MLP((256, 256), 64)``).
* :class:`ResMLP` -- residual MLP (pre-LayerNorm blocks ``x + W2 relu(W1 LN(x))``).
* :class:`Conv1DNet` -- 1-D convolutions for sequences such as MNIST-1D (input ``[B, 40]``).
* :class:`Conv2DNet` -- small 2-D convolutional net for images (8x8 digits, 28x28 MNIST-format);
  takes flattened ``[B, H*W*C]`` or ``[B, H, W, C]`` inputs and an ``image_shape``.

The parameters are float32, or float64 when ``jax_enable_x64`` is on (read at ``init`` / ``apply``
time, like the dtype of the activations), with either initializer.

A Siamese (or triplet) network is one network applied to each element of a pair (triplet) with shared
weights: :func:`siamese_apply` and :func:`triplet_apply` ``jax.vmap`` a model over the tuple axis.

Example::

    import jax, jax.numpy as jnp
    from metriclearn import models
    model = models.build_model("mlp", hidden=(256, 256), embedding_dim=64)
    params = model.init(jax.random.key(0), jnp.zeros((1, 64)))
    emb = model.apply(params, jnp.ones((8, 64)))          # [8, 64]

Reference: Bromley et al., "Signature verification using a Siamese time delay neural network",
NIPS 1993; Hadsell, Chopra & LeCun, "Dimensionality reduction by learning an invariant mapping",
CVPR 2006; Hoffer & Ailon, "Deep metric learning using triplet network", SIMBAD 2015.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metriclearn._validation import (
    check_choice,
    check_flags,
    check_hyper,
    check_positive_int,
    float_dtype,
    is_traced,
)
from metriclearn.sampling import _flat_draw

__all__ = [
    "MLP",
    "ResMLP",
    "Conv1DNet",
    "Conv2DNet",
    "MODELS",
    "build_model",
    "l2_normalize",
    "INITIALIZERS",
    "siamese_apply",
    "triplet_apply",
]

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "silu": nn.silu,
}


def l2_normalize(x: jax.Array, *, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """Scale rows to unit L2 norm, NaN-safe at zero.

    ``x / max(||x||, eps)``: a zero row maps to zero (not NaN) and the gradient stays finite.

    Args:
      x: ``[..., d]``.
      axis: axis to normalize over.
      eps: floor on the norm.

    Returns:
      Array of the shape of ``x`` with rows of norm 1 (or 0 for all-zero rows).

    Raises:
      ValueError: complex ``x`` (``x * x`` is not ``|x|^2``), or a negative or non-finite concrete
        ``eps``.

    The norm is computed in at least float32, and the floor is raised to ``1 / finfo(x.dtype).max``
    (float16) and to ``2 / cbrt(finfo.max)`` of the computing dtype (``2.8e-13`` in float32) where
    ``eps`` is below them (``eps=0`` included, for integer and bool ``x`` too), so that ``eps * eps``
    does not underflow to 0 (a NaN at zero) and the gradient, which has ``1 / eps**3`` at zero, stays
    finite. An ``eps`` whose square overflows the computing dtype (above ``1.8e19`` in float32)
    gives ``x / eps`` (every row with a finite ``|x|^2`` is shorter than it).
    """
    check_hyper(nonnegative=("eps",), eps=eps)
    dtype = x.dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(f"l2_normalize needs real x, got complex dtype {dtype}")
    xf = x.astype(jnp.promote_types(dtype, jnp.float32))
    # the floor applies to integer and bool x as well (a zero row with eps=0 was NaN there)
    floor = 2.0 * float(jnp.finfo(xf.dtype).max) ** (-1 / 3)
    if jnp.issubdtype(dtype, jnp.floating):
        floor = max(1.0 / float(jnp.finfo(dtype).max), floor)
    eps_f = jnp.maximum(jnp.asarray(eps, xf.dtype), floor)
    sq = jnp.sum(xf * xf, axis=axis, keepdims=True)
    out = xf * jax.lax.rsqrt(jnp.maximum(sq, eps_f * eps_f))
    # eps * eps overflowing to inf gave rsqrt(inf) * x = 0 for every row; such an eps exceeds every
    # finite norm, so x / max(||x||, eps) is x / eps (ordinary eps: the branch is not built)
    if is_traced(eps):
        out = jnp.where(eps_f * eps_f == jnp.inf, xf / eps_f, out)
    else:
        with np.errstate(over="ignore"):
            overflows = np.square(np.asarray(max(float(eps), floor), xf.dtype)) == np.inf
        if overflows:
            out = xf / eps_f
    # a row whose |x|^2 overflows (float32 norms beyond ~1.8e19) is NaN, not rsqrt(inf) * x = 0:
    # the failure shows (fit names the step) instead of an all-zero embedding
    out = jnp.where(sq == jnp.inf, jnp.nan, out)
    return out.astype(jnp.result_type(dtype, 1.0))


def _flatten_batch(x: jax.Array, model: str) -> jax.Array:
    """``[B, ...] -> [B, prod(...)]``; rank < 2 is refused (a single example would become a batch of
    scalars), and an empty batch stays ``[0, features]``."""
    if x.ndim < 2:
        raise ValueError(
            f"{model} needs x of shape [batch, n_features, ...], got {tuple(x.shape)} "
            "(add a batch axis: x[None])"
        )
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    check_choice(name, "activation", _ACTIVATIONS)
    return _ACTIVATIONS[name]


INITIALIZERS = ("lecun", "torch")


def _param_dtype() -> np.dtype:
    """Dtype of the network parameters, read when a model is called (``init`` / ``apply``): float64
    under ``jax_enable_x64`` (the activations are float64 there too), float32 otherwise (Flax's
    default)."""
    return float_dtype()


def _check_train(train) -> None:
    """A concrete ``train`` flag must be a bool: ``train="False"`` is truthy and applied dropout."""
    if not is_traced(train):
        check_flags(train=train)


def _dense(features: int, fan_in: int, initializer: str, name: str) -> nn.Dense:
    """``nn.Dense`` with Flax's default init (``lecun``: LeCun-normal weights, zero bias) or PyTorch's
    ``nn.Linear`` init (``torch``: weights and bias uniform in ``+-1/sqrt(fan_in)``), with parameters
    in :func:`_param_dtype`."""
    check_choice(initializer, "initializer", INITIALIZERS)
    param_dtype = _param_dtype()
    if initializer == "lecun":
        return nn.Dense(features, name=name, param_dtype=param_dtype)
    bound = 1.0 / float(max(fan_in, 1)) ** 0.5

    def kernel_init(key, shape, dtype=jnp.float32):
        # Flax's variance_scaling(1/3, "fan_in", "uniform"), op for op, with the draw made flat
        # (sampling._flat_draw: the same numbers, compiled faster)
        variance = jnp.array(1.0 / 3.0 / max(fan_in, 1), dtype=dtype)
        u = _flat_draw(jax.random.uniform, key, shape, dtype=dtype, minval=-1)
        return u * jnp.sqrt(3 * variance)

    def bias_init(key, shape, dtype=jnp.float32):
        return _flat_draw(jax.random.uniform, key, shape, dtype=dtype, minval=-bound, maxval=bound)

    return nn.Dense(
        features,
        kernel_init=kernel_init,
        bias_init=bias_init,
        name=name,
        param_dtype=param_dtype,
    )


class _Head(nn.Module):
    """Linear embedding head with optional L2 normalization."""

    embedding_dim: int
    normalize: bool = False
    initializer: str = "lecun"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        z = _dense(self.embedding_dim, h.shape[-1], self.initializer, "embedding")(h)
        return l2_normalize(z) if self.normalize else z


class _Net(nn.Module):
    """Base of the embedding nets: sizes and rates are checked when a net is constructed, by
    :func:`build_model` or directly (``MLP(dropout=1.0)`` raises ``ValueError``)."""

    _kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        rate = getattr(self, "dropout", None)
        if isinstance(rate, jax.Array | np.ndarray) and not is_traced(rate) and rate.ndim == 0:
            # a 0-d JAX / NumPy array rate (jnp.float32(0.5)): kept as the NumPy scalar of its
            # dtype, which is a number and hashable (programs are cached on the model)
            object.__setattr__(self, "dropout", np.asarray(rate)[()])
        attrs = {
            f.name: tuple(v) if isinstance(v := getattr(self, f.name), list) else v
            for f in dataclasses.fields(self)
            if f.name not in ("parent", "name")
        }
        _check_sizes(attrs, self._kind)
        # list fields stored as tuples: MLP(hidden=[32]) was unhashable, so its programs were never
        # reused (each fit compiled again) and it never equalled MLP(hidden=(32,))
        for name, value in attrs.items():
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, value)
        super().__post_init__()


class MLP(_Net):
    """Multi-layer perceptron embedding: ``x -> [Dense -> act -> dropout] * L -> Dense(d)``.

    Args (attributes):
      hidden: widths of the hidden layers, e.g. ``(256, 256)``.
      embedding_dim: output dimension ``d``.
      normalize: L2-normalize the output embeddings.
      dropout: dropout rate after each hidden activation (active only with ``train=True``, which
        then needs ``rngs={"dropout": key}``): a real number in ``[0, 1)`` (a NumPy scalar or 0-d
        JAX array is stored as a NumPy scalar).
      activation: one of ``relu, gelu, tanh, silu``.
      initializer: ``lecun`` (Flax default: LeCun-normal weights, zero bias) or ``torch`` (PyTorch's
        ``nn.Linear`` default: weights and bias uniform in ``+-1/sqrt(fan_in)``).

    Call: ``model.apply(params, x, train=False)`` with ``x`` ``[B, n_features]`` (extra trailing axes
    are flattened; an input without a batch axis raises ``ValueError``) -> ``[B, embedding_dim]``.
    ``train`` must be a bool (``train="False"`` raises ``ValueError``; it applied dropout).
    """

    _kind: ClassVar[str] = "mlp"
    hidden: Sequence[int] = (256, 256)
    embedding_dim: int = 64
    normalize: bool = False
    dropout: float = 0.0
    activation: str = "relu"
    initializer: str = "lecun"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_train(train)
        act = _activation(self.activation)
        h = _flatten_batch(x, "MLP")
        for i, width in enumerate(self.hidden):
            h = act(_dense(int(width), h.shape[-1], self.initializer, f"dense_{i}")(h))
            if self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return _Head(self.embedding_dim, self.normalize, self.initializer, name="head")(h)


class ResMLP(_Net):
    """Residual MLP: ``Dense(width)`` stem, ``n_blocks`` pre-norm residual blocks, embedding head.

    Block: ``h <- h + Dense(width)(dropout(act(Dense(expansion * width)(LayerNorm(h)))))``.

    Args (attributes):
      width: residual stream width.
      n_blocks: number of residual blocks.
      expansion: hidden expansion factor inside a block.
      embedding_dim, normalize, dropout, activation, initializer: as in :class:`MLP`.
    """

    _kind: ClassVar[str] = "resmlp"
    width: int = 256
    n_blocks: int = 2
    expansion: int = 2
    embedding_dim: int = 64
    normalize: bool = False
    dropout: float = 0.0
    activation: str = "relu"
    initializer: str = "lecun"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_train(train)
        act = _activation(self.activation)
        init = self.initializer
        h = _flatten_batch(x, "ResMLP")
        h = _dense(self.width, h.shape[-1], init, "stem")(h)
        for i in range(self.n_blocks):
            r = nn.LayerNorm(name=f"norm_{i}", param_dtype=_param_dtype())(h)
            r = act(_dense(self.expansion * self.width, self.width, init, f"up_{i}")(r))
            if self.dropout > 0:
                r = nn.Dropout(self.dropout, deterministic=not train)(r)
            h = h + _dense(self.width, self.expansion * self.width, init, f"down_{i}")(r)
        h = act(nn.LayerNorm(name="norm_out", param_dtype=_param_dtype())(h))
        return _Head(self.embedding_dim, self.normalize, init, name="head")(h)


class Conv1DNet(_Net):
    """1-D convolutional embedding net for sequences (MNIST-1D: input ``[B, 40]``).

    ``[B, L]`` (or ``[B, L, C]``) -> ``len(channels)`` x [Conv1D(kernel, stride 2) -> act] ->
    flatten -> Dense(hidden) -> act -> embedding head. The default mirrors the convolutional baseline of
    Greydanus, "Scaling down deep learning" (MNIST-1D), 2020.

    Args (attributes):
      channels: output channels of each convolution.
      kernel_size: convolution width.
      hidden: width of the dense layer after the convolutions (0 for none).
      dropout: dropout rate after the dense layer's activation (needs ``hidden > 0``).
      embedding_dim, normalize, activation: as in :class:`MLP`.
    """

    _kind: ClassVar[str] = "conv1d"
    channels: Sequence[int] = (32, 32, 32)
    kernel_size: int = 5
    hidden: int = 128
    embedding_dim: int = 64
    normalize: bool = False
    dropout: float = 0.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_train(train)
        act = _activation(self.activation)
        if x.ndim not in (2, 3):  # more axes would be merged into examples when flattening
            raise ValueError(f"Conv1DNet needs x of shape [B, L] or [B, L, C], got {x.shape}")
        h = x[..., None] if x.ndim == 2 else x
        for i, c in enumerate(self.channels):
            h = act(
                nn.Conv(
                    int(c),
                    (self.kernel_size,),
                    strides=(2,),
                    padding="SAME",
                    name=f"conv_{i}",
                    param_dtype=_param_dtype(),
                )(h)
            )
        h = h.reshape(h.shape[0], math.prod(h.shape[1:]))
        if self.hidden:
            h = act(nn.Dense(self.hidden, name="dense", param_dtype=_param_dtype())(h))
            if self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return _Head(self.embedding_dim, self.normalize, name="head")(h)


class Conv2DNet(_Net):
    """Small 2-D convolutional embedding net for images (8x8 digits, 28x28 MNIST-format).

    Input ``[B, H*W*C]`` (flattened, reshaped with ``image_shape``) or ``[B, H, W, C]``. Each stage:
    3x3 Conv -> act -> 2x2 average pool (skipped once the map is 1 pixel wide); then global flatten,
    Dense(hidden) -> act -> embedding head.

    Args (attributes):
      image_shape: ``(H, W, C)`` used to un-flatten 2-D inputs, e.g. ``(8, 8, 1)`` or ``(28, 28, 1)``.
      features: output channels of each stage.
      hidden: width of the dense layer (0 for none).
      dropout: dropout rate after the dense layer's activation (needs ``hidden > 0``).
      embedding_dim, normalize, activation: as in :class:`MLP`.
    """

    _kind: ClassVar[str] = "conv2d"
    image_shape: Sequence[int] = (8, 8, 1)
    features: Sequence[int] = (32, 64)
    hidden: int = 128
    embedding_dim: int = 64
    normalize: bool = False
    dropout: float = 0.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_train(train)
        act = _activation(self.activation)
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) == 2:
            shape = (*shape, 1)
        if x.ndim not in (2, 3, 4):
            raise ValueError(
                f"Conv2DNet needs x of shape [B, H*W*C], [B, H, W] or [B, H, W, C], got {x.shape}"
            )
        if x.ndim == 2:
            if x.shape[1] != shape[0] * shape[1] * shape[2]:
                raise ValueError(
                    f"x has {x.shape[1]} features but image_shape {shape} needs "
                    f"{shape[0] * shape[1] * shape[2]}"
                )
            h = x.reshape(x.shape[0], *shape)
        elif x.ndim == 3:
            h = x[..., None]
        else:
            h = x
        for i, f in enumerate(self.features):
            h = act(
                nn.Conv(
                    int(f), (3, 3), padding="SAME", name=f"conv_{i}", param_dtype=_param_dtype()
                )(h)
            )
            if h.shape[1] >= 2 and h.shape[2] >= 2:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], math.prod(h.shape[1:]))
        if self.hidden:
            h = act(nn.Dense(self.hidden, name="dense", param_dtype=_param_dtype())(h))
            if self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return _Head(self.embedding_dim, self.normalize, name="head")(h)


MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "resmlp": ResMLP,
    "conv1d": Conv1DNet,
    "conv2d": Conv2DNet,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a model of :data:`MODELS` by name.

    Args:
      name: one of ``mlp, resmlp, conv1d, conv2d``.
      **kwargs: the model's attributes (``hidden``, ``embedding_dim``, ``normalize``, ...).

    Returns:
      An unbound ``flax.linen.Module``.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or an attribute the model lacks.

    Example::

        model = build_model("conv2d", image_shape=(8, 8, 1), embedding_dim=32)
    """
    check_choice(name, "model", MODELS)
    cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}  # no ClassVars
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(
            f"model {name!r} has no option(s) {unknown}; valid: {', '.join(sorted(fields))}"
        )
    for seq in ("hidden", "channels", "features", "image_shape"):
        if seq in kwargs and isinstance(kwargs[seq], list):
            kwargs[seq] = tuple(kwargs[seq])
    return cls(**kwargs)  # its __post_init__ checks the sizes (_check_sizes)


def _check_sizes(kwargs: dict[str, Any], name: str) -> None:
    """Out-of-range sizes and rates would build a model that trains to nothing or fails deep in JAX;
    unknown activation or initializer names would fail only at its first call."""
    if "activation" in kwargs:
        check_choice(kwargs["activation"], "activation", _ACTIVATIONS)
    if "initializer" in kwargs:
        check_choice(kwargs["initializer"], "initializer", INITIALIZERS)
    for key in ("embedding_dim", "width", "expansion", "kernel_size"):
        if key in kwargs:
            check_positive_int(kwargs[key], key)
    if "n_blocks" in kwargs:
        check_positive_int(kwargs["n_blocks"], "n_blocks", minimum=0)
    for key in ("channels", "features"):  # conv stages: each needs output channels
        if key in kwargs:
            if not isinstance(kwargs[key], tuple):
                raise ValueError(f"{key} must be a sequence of ints, got {kwargs[key]!r}")
            for c in kwargs[key]:
                check_positive_int(c, key)
    if "image_shape" in kwargs:
        shape = kwargs["image_shape"]
        if not isinstance(shape, tuple) or len(shape) not in (2, 3):
            raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {shape!r}")
        for v in shape:
            check_positive_int(v, "image_shape")
    hidden = kwargs.get("hidden")
    if name in ("mlp",):  # MLP widths: each layer needs units
        if hidden is not None:
            if not isinstance(hidden, tuple):
                raise ValueError(f"hidden must be a sequence of layer widths, got {hidden!r}")
            for h in hidden:
                check_positive_int(h, "hidden")
    elif hidden is not None:  # the conv nets' dense layer: 0 means none
        check_positive_int(hidden, "hidden", minimum=0)
    if "normalize" in kwargs and not isinstance(kwargs["normalize"], bool | np.bool_):
        raise ValueError(f"normalize must be True or False, got {kwargs['normalize']!r}")
    if "dropout" in kwargs:
        rate = kwargs["dropout"]
        if (
            isinstance(rate, bool | np.bool_)
            or not isinstance(rate, numbers.Real)
            or not 0.0 <= float(rate) < 1.0
        ):
            raise ValueError(
                "dropout must be a rate in [0, 1) given as a real number (Python, NumPy, or a "
                f"concrete 0-d JAX array), got {rate!r}"
            )
        # a rate with no layer to apply it after would be silently ignored
        if name in ("conv1d", "conv2d") and rate > 0 and not kwargs.get("hidden", 1):
            raise ValueError(
                f"{MODELS[name].__name__} applies dropout after its dense layer: dropout={rate} "
                "needs hidden > 0 (hidden=0 would silently ignore it)"
            )
        if name == "mlp" and rate > 0 and kwargs.get("hidden", (1,)) == ():
            raise ValueError(
                f"MLP applies dropout after its hidden layers: dropout={rate} needs at least one "
                "(hidden=() would silently ignore it)"
            )
        if name == "resmlp" and rate > 0 and kwargs.get("n_blocks", 1) == 0:
            raise ValueError(
                f"ResMLP applies dropout inside its blocks: dropout={rate} needs n_blocks > 0 "
                "(n_blocks=0 would silently ignore it)"
            )


def _tuple_apply(model: nn.Module, params, xs: tuple[jax.Array, ...], **kwargs) -> tuple:
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1:
        raise ValueError(
            f"all tuple elements must have the same shape, got {[tuple(x.shape) for x in xs]}"
        )
    stacked = jnp.stack(xs)  # [k, B, ...]
    rngs = kwargs.pop("rngs", None)
    if rngs is None:
        out = jax.vmap(lambda x: model.apply(params, x, **kwargs))(stacked)
    else:
        # one key per element, split from each given one: vmapping the given keys would give every
        # element the same dropout mask, where separate applies (two forward passes) differ
        named = rngs if isinstance(rngs, dict) else {"params": rngs}  # Flax: a bare key is "params"
        split = {name: jax.random.split(key, len(xs)) for name, key in named.items()}
        out = jax.vmap(lambda x, r: model.apply(params, x, rngs=r, **kwargs))(stacked, split)
    return tuple(out[i] for i in range(len(xs)))


def siamese_apply(model: nn.Module, params, x1: jax.Array, x2: jax.Array, **kwargs) -> tuple:
    """Siamese network: the same model (shared ``params``) applied to both elements of each pair.

    Implemented as ``jax.vmap`` of ``model.apply`` over the stacked pair axis ``[2, B, ...]``.

    Args:
      model: a Flax module.
      params: its variables.
      x1: first elements ``[B, ...]``.
      x2: second elements, same shape.
      **kwargs: forwarded to ``model.apply`` (e.g. ``train=True, rngs={"dropout": key}``). Each
        key of ``rngs`` is split in two, one per element, so the two branches draw their own dropout
        masks, as two separate forward passes would.

    Returns:
      ``(e1, e2)``, each ``[B, embedding_dim]``, equal to ``model.apply(params, x1)`` and
      ``model.apply(params, x2)`` (with ``rngs``: to ``model.apply(params, x_i, rngs=r_i)``, ``r_i``
      the ``i``-th of ``jax.random.split(key, 2)`` for each key).

    Example::

        e1, e2 = siamese_apply(model, params, X[idx[:, 0]], X[idx[:, 1]])
    """
    return _tuple_apply(model, params, (x1, x2), **kwargs)


def triplet_apply(
    model: nn.Module, params, anchor: jax.Array, positive: jax.Array, negative: jax.Array, **kwargs
) -> tuple:
    """Triplet network: one shared model applied to anchor, positive and negative (vmapped).

    Args:
      model, params: as in :func:`siamese_apply`.
      anchor, positive, negative: ``[B, ...]`` each, same shape.
      **kwargs: as in :func:`siamese_apply` (each ``rngs`` key split in three, one per element).

    Returns:
      ``(e_anchor, e_positive, e_negative)``, each ``[B, embedding_dim]``.
    """
    return _tuple_apply(model, params, (anchor, positive, negative), **kwargs)
