"""jaxprov.attacks: the one L-inf PGD and the one valid input box (used by DDV's twins and by
adversarial extraction in jaxprov.training)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprov
from jaxprov import attacks, training
from jaxprov.datasets import mnist_images
from jaxprov.model import InputSpec


@pytest.fixture(scope="module")
def mlp():
    """An MLP trained on 128 real digits, and 64 other digits in its input space with their labels."""
    raw, labels = mnist_images()
    order = np.asarray(jax.random.permutation(jax.random.PRNGKey(0), len(labels)))[:192]
    spec = jaxprov.models.create("mlp[hidden=32]")[2]
    x, y = np.asarray(spec.normalize(raw[order])), labels[order]
    model = training.train("mlp[hidden=32]", x[:128], y[:128], jax.random.PRNGKey(0), epochs=10, batch=32)
    return model, jnp.asarray(x[128:]), jnp.asarray(y[128:], jnp.int32)


def test_pgd_raises_the_loss_within_eps_and_the_input_bounds(mlp):
    model, xb, yb = mlp
    lo, hi = attacks.valid_box(model.input_spec, xb.ndim)
    assert lo.shape == hi.shape == (1, 1, 1, 1)  # MNIST's one channel, shaped to broadcast over NHWC

    def loss(xa):
        return optax.softmax_cross_entropy_with_integer_labels(model(xa), yb).mean()

    xa = attacks.linf_pgd(loss, xb, 0.3, 3, 0.2, lo, hi)
    assert 0.2 < float(jnp.max(jnp.abs(xa - xb))) <= 0.3 + 1e-6
    assert bool(jnp.all(xa >= lo - 1e-6)) and bool(jnp.all(xa <= hi + 1e-6))
    assert bool(jnp.any(xa == lo))  # MNIST's black background sits on the lower bound
    assert float(loss(xa)) > float(loss(xb)) + 0.5


def test_a_start_outside_the_ball_or_the_box_is_projected_first():
    x = jnp.asarray([[0.0, 0.5, 1.0]])
    start = x + jnp.asarray([[-2.0, 2.0, 0.05]])
    # No steps: the result is the projected start, within eps of x and inside [0, 1].
    out = attacks.linf_pgd(lambda z: jnp.sum(z), x, 0.1, 0, 0.01, 0.0, 1.0, start=start)
    np.testing.assert_allclose(np.asarray(out), [[0.0, 0.6, 1.0]], atol=1e-7)
    # Ascending sum(z) for many steps ends at the corner of ball and box.
    far = attacks.linf_pgd(lambda z: jnp.sum(z), x, 0.1, 50, 0.01, 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(far), [[0.1, 0.6, 1.0]], atol=1e-6)


def test_valid_box_per_channel_and_unbounded():
    rgb = InputSpec("image", "NHWC", (8, 8, 3), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.1))
    lo, hi = attacks.valid_box(rgb, 4)
    assert lo.shape == hi.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(np.asarray(lo).ravel(), [-2.5, -2.0, -3.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hi).ravel(), [2.5, 3.0, 7.0], rtol=1e-6)
    raw = InputSpec("image", "NHWC", (8, 8, 1))  # no normalisation: the raw range itself, as scalars
    assert [float(b) for b in attacks.valid_box(raw, 4)] == [0.0, 1.0]
    free = InputSpec("image", "NHWC", (8, 8, 1), raw_range=None)
    assert [float(b) for b in attacks.valid_box(free, 4)] == [-np.inf, np.inf]
