"""Test settings in the spirit of equinox's: loud dtype/rank promotion, several simulated CPU devices,
a `slow` marker on every test that trains a zoo (`make test-fast` leaves them out), a `serial` marker
on the tests whose results rest on measured time, and the xdist groups of `make test`'s parallel run."""

import os
import re
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion: int + float or bool * float must be written as a cast, so no array
# silently changes precision (python scalars stay weakly typed).
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_default_matmul_precision", "highest")


def to_nhwc(x_nchw) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x_nchw).transpose(0, 2, 3, 1))


def max_rel_diff(a, b) -> float:
    """max |a - b| / max(1, max |b|): absolute for ordinary activations, relative for large ones."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


# Fixtures that train a zoo (minutes on a 2-core CPU): every test using one is marked `slow`.
ZOO_FIXTURES = ("mnist_zoo", "ci_run", "exits_zoo", "text_ci_zoo")
# Fixtures whose results rest on measured time (the exits zoo's timing fingerprint is calibrated when
# it is built): every test using one is marked `serial`; `make test` runs those after the parallel
# run, on their own, so no busy worker beside them shifts the timings.
TIMING_FIXTURES = ("exits_zoo",)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if any(name in ZOO_FIXTURES for name in names):
            item.add_marker(pytest.mark.slow)
        if any(name in TIMING_FIXTURES for name in names):
            item.add_marker(pytest.mark.serial)
    if getattr(config.option, "loadgroup", False):  # an xdist worker of `make test`'s parallel run
        # The zoo groups, the longest, first (in ZOO_FIXTURES' order), then the rest in file order:
        # the workers take groups in this order, and a long group started last would end the run late.
        groups, rank = xdist_groups(Path(__file__).resolve().parent), {zoo: i for i, zoo in enumerate(ZOO_FIXTURES)}
        items.sort(key=lambda item: rank.get(groups.get(item.nodeid.split("::", 1)[0], ""), len(rank)))


def xdist_groups(tests: Path) -> dict[str, str]:
    """{test module's node id: its group} for `make test`'s parallel run: a module's tests stay on one
    worker (its module fixtures are built once), and all the modules that name one zoo fixture share
    that zoo's group (the zoo is trained once, by one worker, with or without pytest's cache).

    Read from the modules' source, since xdist's controller sees node ids, not fixtures: a module
    naming a zoo fixture (`tests/test_notebook.py`'s `mnist_zoo`) takes its tests there. (xdist's own
    `xdist_group` marks do not reach the controller under pytest 9.2: xdist 3.8 appends the group to
    `item._nodeid`, which pytest 9.2's `nodeid` no longer reads: pytest-dev/pytest-xdist#1386.)"""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    modules = {f"{tests.name}/{path.name}": path.read_text(encoding="utf-8") for path in sorted(tests.glob("test_*.py"))}
    for module, source in modules.items():
        for zoo in ZOO_FIXTURES:
            if re.search(rf"\b{zoo}\b", source):
                a, b = root(zoo), root(module)
                if a != b:  # the zoo's name stays the group's name
                    parent[b] = a
    return {module: root(module) for module in modules}


@pytest.hookimpl(optionalhook=True)  # the hook exists only where pytest-xdist is installed
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` (what `make test` runs) schedules by `xdist_groups`: each group is one unit
    of work, handed to the next free worker in the order the workers collected (`--no-loadscope-reorder`):
    the zoo groups first (pytest_collection_modifyitems), then file order."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    groups = xdist_groups(Path(__file__).resolve().parent)

    class ZooGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return groups.get(module, module)

    return ZooGroups(config, log)


# PyTorch is imported by the tests that use it, through these fixtures (skipped without it), so
# every other test imports and runs where torch is not installed (tests/test_without_torch.py).
@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def torchvision(torch):
    return pytest.importorskip("torchvision")


@pytest.fixture(scope="session")
def reference(torch):
    """tests/torch_reference.py: the PyTorch MLP and LeNet and randomize_batchnorm."""
    from tests import torch_reference
    return torch_reference


@pytest.fixture(scope="session")
def cifar_reference(torch):
    """tests/torch_reference_cifar.py: the PyTorch CIFAR ResNet, VGG-BN and MobileNet."""
    from tests import torch_reference_cifar
    return torch_reference_cifar


@pytest.fixture
def lenet_file(tmp_path, torch, reference):
    """A seeded PyTorch LeNet state dict saved with torch.save: the valid checkpoint tests start from."""
    torch.manual_seed(0)
    path = tmp_path / "lenet.pt"
    torch.save(reference.LeNet().state_dict(), path)
    return path


@pytest.fixture
def torch_state_dict(torch):
    def numpy_state_dict(module):
        return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    return numpy_state_dict
from tests.zoo_fixtures import ci_run, mnist_zoo, text_ci_zoo  # noqa: E402,F401
from tests.exits_fixtures import exits_zoo  # noqa: E402,F401
