"""Tests of metriclearn.reducers against brute-force loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metriclearn import reducers as R


def brute(losses, weights, kind):
    num = sum(w * l for l, w in zip(losses, weights) if w != 0)
    if kind == "sum":
        return num
    den = sum(w for l, w in zip(losses, weights) if w != 0 and (kind == "mean" or l > 0))
    return num / den if den > 0 else 0.0


@pytest.mark.parametrize("kind", ["mean", "sum", "avg_nonzero"])
def test_reducers_match_brute_force_under_jit(kind):
    rng = np.random.default_rng(0)
    losses = np.maximum(rng.normal(size=12), 0.0).astype(np.float32)
    weights = rng.integers(0, 3, size=12).astype(np.float32)
    got = jax.jit(R.get(kind))(jnp.asarray(losses), jnp.asarray(weights))
    np.testing.assert_allclose(float(got), brute(losses, weights, kind), rtol=1e-6)
    np.testing.assert_allclose(
        float(R.reduce(jnp.asarray(losses), kind)), brute(losses, np.ones(12), kind), rtol=1e-6
    )


@pytest.mark.parametrize("kind", ["mean", "sum", "avg_nonzero"])
def test_reducers_empty_and_all_zero_give_zero_with_finite_grad(kind):
    f = R.get(kind)
    assert float(f(jnp.zeros(0))) == 0.0
    assert float(f(jnp.zeros(4))) == 0.0
    assert float(f(jnp.ones(4), jnp.zeros(4))) == 0.0
    g = jax.grad(lambda l: f(l, jnp.zeros(4)))(jnp.ones(4))
    assert np.all(np.asarray(g) == 0.0)


@pytest.mark.parametrize("kind", ["mean", "sum", "avg_nonzero"])
def test_zero_weight_items_do_not_count_even_if_nonfinite(kind):
    # "Items with weight 0 do not count at all": a masked inf / NaN slot must not poison the result
    losses = jnp.array([1.0, 3.0, jnp.inf, jnp.nan])
    w = jnp.array([1.0, 1.0, 0.0, 0.0])
    assert float(R.get(kind)(losses, w)) == (4.0 if kind == "sum" else 2.0)
    g = jax.grad(lambda l: R.get(kind)(l, w))(jnp.array([1.0, 3.0, 5.0, 7.0]))
    assert np.all(np.isfinite(np.asarray(g))) and float(g[2]) == float(g[3]) == 0.0


@pytest.mark.parametrize("kind", ["mean", "sum", "avg_nonzero"])
def test_weighted_nan_loss_propagates(kind):
    # a NaN loss that counts must surface as NaN in every reducer (avg_nonzero used to drop it)
    assert np.isnan(float(R.get(kind)(jnp.array([1.0, jnp.nan]))))


def test_integer_losses_keep_fractional_weights():
    losses, w = jnp.array([1, 2, 4]), jnp.array([0.5, 0.5, 1.0])
    assert float(R.mean(losses, w)) == pytest.approx(5.5 / 2.0)
    assert float(R.sum(losses, w)) == pytest.approx(5.5)
    assert float(R.avg_nonzero(losses, w)) == pytest.approx(5.5 / 2.0)


def test_unknown_reduction_lists_valid_ones():
    with pytest.raises(ValueError, match="avg_nonzero, mean, sum"):
        R.reduce(jnp.ones(2), "avg")


@pytest.mark.parametrize("kind", ["mean", "sum"])
def test_weight_gradient_is_the_loss_even_at_zero_weight(kind):
    # d sum(w l) / d w_i = l_i also where w_i = 0 (weights may be learned or compared to a formula)
    losses = jnp.array([1.0, 2.0, 4.0])
    g = jax.grad(lambda w: R.get(kind)(losses, w))(jnp.array([1.0, 0.0, 1.0]))
    want = [1.0, 2.0, 4.0] if kind == "sum" else [(1 - 2.5) / 2, (2 - 2.5) / 2, (4 - 2.5) / 2]
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-6)


def test_negative_or_nan_weights_are_refused():
    # mean([1, 2], weights=[1, -1]) was silently 0 (the weights sum to 0)
    for w in ([1.0, -1.0], [1.0, float("nan")]):
        for red in (R.mean, R.sum, R.avg_nonzero):
            with pytest.raises(ValueError, match="weights must be non-negative"):
                red(jnp.array([1.0, 2.0]), jnp.array(w))
    assert float(R.mean(jnp.array([1.0, 3.0]), jnp.array([1.0, 0.0]))) == 1.0


def test_weights_of_the_wrong_shape_are_named():
    # weights of length 2 for 3 losses gave JAX's "Incompatible types for broadcasting"
    for red in (R.mean, R.sum, R.avg_nonzero, jax.jit(R.mean)):
        with pytest.raises(
            ValueError, match=r"weights must be broadcastable .* \(3,\), got shape \(2,\)"
        ):
            red(jnp.ones(3), jnp.ones(2))
        with pytest.raises(ValueError, match="weights must be broadcastable"):
            red(
                jnp.ones(3), jnp.ones((2, 3))
            )  # losses would broadcast to weights, not the converse
    assert float(R.sum(jnp.ones((2, 3)), jnp.array([[1.0], [2.0]]))) == 9.0  # broadcastable: fine
