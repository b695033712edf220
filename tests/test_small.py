"""Parity of the small families with the PyTorch references, and architecture detection."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # every test here compares against a PyTorch reference

import converters  # noqa: E402
from tests.conftest import max_rel_diff, to_nhwc  # noqa: E402
from tests.torch_reference import LeNet, MLP  # noqa: E402


@pytest.mark.parametrize("net, expected_arch", [
    (lambda: MLP(), "mlp"),
    (lambda: MLP(in_features=3 * 32 * 32, hidden=(64, 32, 16), num_classes=7),
     "mlp[num_classes=7,hidden=64:32:16,image_size=32,channels=3]"),
    (lambda: LeNet(), "lenet"),
    (lambda: LeNet(channels=3, num_classes=5), "lenet[num_classes=5,channels=3]"),
])
def test_small_families_match_pytorch_and_are_detected(net, expected_arch, torch_state_dict):
    torch.manual_seed(0)
    ref = net().eval()
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == expected_arch
    x = torch.randn(4, *np.array(model.input_spec.shape)[[2, 0, 1]])
    with torch.no_grad():
        expected = ref(x).numpy()
    got = np.asarray(model(to_nhwc(x.numpy())))
    assert got.shape == expected.shape
    assert max_rel_diff(got, expected) <= 1e-4
