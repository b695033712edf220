"""String-addressable model families: `resolve`, `canonical`, `create`, `init`, `build` and the arch keys
they read ("resnet18", "resnet18[num_classes=10]"); the registry itself is `jaxprov.models.registry`,
one family per file beside it."""

from jaxprov.models.registry import (  # noqa: F401
    Family, abstract_params, arch_key, build, canonical, create, init, list_archs, register, resolve)

# Families register themselves on import.
from jaxprov.models import small  # noqa: E402,F401
from jaxprov.models import vit  # noqa: E402,F401
from jaxprov.models import mobilenet_v2, resnet, vgg  # noqa: E402,F401
from jaxprov.models import cifar_resnet, cifar_vgg, cifar_mobilenet  # noqa: E402,F401
from jaxprov.models import bert  # noqa: E402,F401
from jaxprov.models import exit_cnn, sdn_mobilenet, sdn_resnet, sdn_vgg  # noqa: E402,F401  (multi-exit)
