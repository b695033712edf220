"""`exits_zoo`: a tiny multi-exit zoo on MNIST (an owner, a fine-tuned child, three independents of
cnn_exits), trained once per session in about half a minute on a 2-core CPU, and a timing fingerprint
of the owner calibrated on two of the independents (the third is held out)."""

from __future__ import annotations

import jax
import pytest

from jaxprov import datasets, models
from jaxprov.exits import craft, make
from jaxprov.training import derive

ARCH = "cnn_exits"
THRESHOLD = 0.9
REPEATS = 15


@pytest.fixture(scope="session")
def exits_zoo() -> dict:
    spec = models.create(ARCH)[2]
    x, y = datasets.inputs("mnist:base", spec)
    xf, yf = datasets.inputs("mnist:finetune", spec)
    owner = derive.train_exits(ARCH, x[:800], y[:800], jax.random.PRNGKey(1), 4, lr=2e-3, batch=32, name="owner")
    child = derive.finetune(owner, xf[:400], yf[:400], jax.random.PRNGKey(2), 2, lr=5e-4, batch=32, name="child")
    independents = [
        derive.train_exits(ARCH, x[a:a + 400], y[a:a + 400], jax.random.PRNGKey(10 + i), 3, lr=2e-3, batch=32,
                           name=f"independent{i}")
        for i, a in enumerate((800, 1200, 1600))]
    config = craft.CraftConfig(per_exit=12, seeds_per_exit=20)
    # 15 repeats (the library's default is 60): enough for these verdicts, and cheaper.
    fingerprint = make.make(owner, "mnist:test", THRESHOLD, config, jax.random.PRNGKey(0), null=independents[:2],
                            repeats=REPEATS)
    return {"owner": owner, "child": child, "independent": independents, "fingerprint": fingerprint}
