"""A pytest plugin (`-p tests.no_torch`) that makes PyTorch unfindable, as on a machine without it.

Every import finder is wrapped to find nothing named torch / torchvision: `import torch` raises
ModuleNotFoundError (so `pytest.importorskip` skips), `importlib.util.find_spec("torch")` is None
(so transformers and scipy see no torch) and sys.modules holds no stand-in for it.
tests/test_without_torch.py runs the suite's collection and its torch-free tests under it.
"""

import sys

BLOCKED = ("torch", "torchvision")


class _Without:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):  # invalidate_caches, find_distributions, ...
        return getattr(self.finder, attr)


if any(name.split(".")[0] in BLOCKED for name in sys.modules):
    raise RuntimeError("tests/no_torch.py: torch was imported before the plugin loaded")
sys.meta_path[:] = [_Without(finder) for finder in sys.meta_path]
