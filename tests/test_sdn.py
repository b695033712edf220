"""Shallow-Deep Networks (jaxprov.models.sdn_resnet, sdn_vgg, sdn_mobilenet): every exit's logits match a
PyTorch reference of the SDN code's layout after conversion, the checkpoint's IC positions are
detected, and staged segments compose to the whole network."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import converters
from jaxprov import models
from jaxprov.models.multi_exit import EXITS
from tests.conftest import max_rel_diff, to_nhwc


@pytest.mark.parametrize("depth, ics, arch", [
    (56, (4, 8, 12, 16, 20, 24), "sdn_resnet56"),
    (20, (2, 4, 6, 8), "sdn_resnet20"),
    (20, (3, 6), "sdn_resnet20[ics=3:6]"),
])
def test_sdn_resnet_matches_pytorch_at_every_exit(depth, ics, arch, torch, reference, torch_state_dict):
    from tests.torch_reference_sdn import SDNResNet
    torch.manual_seed(0)
    ref = reference.randomize_batchnorm(SDNResNet(depth, 10, ics))
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == arch and model.module.num_exits == len(ics) + 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = np.stack([o.numpy() for o in ref(x)], axis=1)
    got = jax.jit(model.features)(model.params, to_nhwc(x.numpy()))[EXITS]
    assert got.shape == want.shape
    assert max_rel_diff(got, want) <= 1e-4
    if depth != 20:
        return  # staging is the same code at every depth; the 56-layer one costs CI time for nothing
    h = to_nhwc(x.numpy())
    for k in range(model.module.num_exits):  # the staged segments give the same exits
        h, logits = model.module.apply(model.params, k, h, method="segment")
        assert max_rel_diff(logits, want[:, k]) <= 1e-4


def test_sdn_resnet_refuses_bad_ic_positions():
    with pytest.raises(ValueError, match="ics must be increasing"):
        models.init("sdn_resnet20[ics=9]", jax.random.PRNGKey(0))


@pytest.mark.parametrize("net, arch", [("SDNVGG", "sdn_vgg16_bn"), ("SDNMobileNet", "sdn_mobilenet")])
def test_sdn_vgg_and_mobilenet_match_pytorch_at_every_exit(net, arch, torch, reference, torch_state_dict):
    from tests import torch_reference_sdn
    torch.manual_seed(0)
    ref = reference.randomize_batchnorm(getattr(torch_reference_sdn, net)())
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == arch
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = np.stack([o.numpy() for o in ref(x)], axis=1)
    got = jax.jit(model.features)(model.params, to_nhwc(x.numpy()))[EXITS]
    assert got.shape == want.shape == (2, len(model.module.config.ics) + 1, 10)
    assert max_rel_diff(got, want) <= 1e-4
