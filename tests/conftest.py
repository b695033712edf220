"""Test settings in the spirit of equinox's: loud dtype/rank promotion, several simulated CPU devices."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


def to_nhwc(x_nchw) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x_nchw).transpose(0, 2, 3, 1))


def max_rel_diff(a, b) -> float:
    """max |a - b| / max(1, max |b|): absolute for ordinary activations, relative for large ones."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.fixture
def torch_state_dict():
    def numpy_state_dict(module):
        return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    return numpy_state_dict
from tests.zoo_fixtures import mnist_zoo  # noqa: E402,F401
