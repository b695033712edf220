"""Deprecated alias of `jaxprov.training` (and `jaxprov.datasets`), kept for one release.

The package was renamed because "zoo" also names `jaxprov.Zoo`, the set of models being compared.
`import jaxprov.zoo` warns and re-exports `jaxprov.training`; the old module paths still import:
jaxprov.zoo.derive, .recipe and .mnist are jaxprov.training's, jaxprov.zoo.data is jaxprov.datasets.
"""

import sys
import warnings

from jaxprov import datasets as data
from jaxprov import training
from jaxprov.training import *  # noqa: F401,F403
from jaxprov.training import __all__ as _training_all
from jaxprov.training import derive, mnist, recipe
from jaxprov.datasets import domain, inputs

warnings.warn("jaxprov.zoo is deprecated and will be removed in the next release: use jaxprov.training "
              "(and jaxprov.datasets for jaxprov.zoo.data)", DeprecationWarning, stacklevel=2)

# The old submodule paths resolve to the new modules themselves (one module object, not copies).
for _name, _module in {"data": data, "derive": derive, "mnist": mnist, "recipe": recipe}.items():
    sys.modules[f"{__name__}.{_name}"] = _module

__all__ = [*_training_all, "data", "domain", "inputs", "mnist"]
del _name, _module, training
