"""CIFAR families vs their PyTorch references: outputs, every named feature, and detection."""

import jax
import pytest

import converters
from converters import cifar
from jaxprov import models
from tests.conftest import max_rel_diff, to_nhwc


def _record(modules):
    """Forward hooks keeping (input, output) of each named module, and their handles."""
    seen = {}

    def hook(name):
        return lambda module, inputs, output: seen.__setitem__(name, (inputs[0], output))
    return seen, [m.register_forward_hook(hook(name)) for name, m in modules.items()]


def _resnet_features(ref, seen):
    blocks = [b for stage in (ref.layer1, ref.layer2, ref.layer3) for b in stage]
    expected = {"pre_logits": seen["fc"][0]}
    for k, block in enumerate(blocks, start=1):
        x, out = seen[f"block{k}"]
        shortcut = x if block.downsample is None else seen[f"short{k}"][1]
        expected[f"block{k}"], expected[f"block{k}_sum"] = out, seen[f"bn2_{k}"][1] + shortcut
    return expected


def _resnet_modules(ref):
    blocks = [b for stage in (ref.layer1, ref.layer2, ref.layer3) for b in stage]
    modules = {"fc": ref.fc}
    for k, block in enumerate(blocks, start=1):
        modules[f"block{k}"], modules[f"bn2_{k}"] = block, block.bn2
        if block.downsample is not None:
            modules[f"short{k}"] = block.downsample
    return modules


def _vgg_modules(ref):
    import torch

    relus = [i for i, m in enumerate(ref.features) if isinstance(m, torch.nn.ReLU)]
    modules = {"classifier0": ref.classifier[0], "classifier6": ref.classifier[6]}
    for k, i in enumerate(relus, start=1):
        modules[f"conv{k}"] = ref.features[i]
        pooled = i + 1 < len(ref.features) and isinstance(ref.features[i + 1], torch.nn.MaxPool2d)
        modules[f"block{k}"] = ref.features[i + 1] if pooled else ref.features[i]
    return modules


def _vgg_features(ref, seen):
    expected = {"flat": seen["classifier0"][0], "pre_logits": seen["classifier6"][0]}
    expected.update({name: out for name, (_, out) in seen.items() if name.startswith(("conv", "block"))})
    return expected


def _mobilenet_modules(ref):
    return {"linear": ref.linear, **{f"block{k}": m for k, m in enumerate(ref.layers, start=1)}}


def _mobilenet_features(ref, seen):
    expected = {name: out for name, (_, out) in seen.items() if name.startswith("block")}
    return {**expected, "pre_logits": seen["linear"][0]}


RESNET = (_resnet_modules, _resnet_features)
VGG = (_vgg_modules, _vgg_features)
MOBILENET = (_mobilenet_modules, _mobilenet_features)

CASES = [  # (tests/torch_reference_cifar.py class, its arguments), how to tap it, the detected arch
    (("CifarResNet", 20), RESNET, "cifar_resnet20"),
    (("CifarResNet", 32), RESNET, "cifar_resnet32"),
    (("CifarResNet", 44), RESNET, "cifar_resnet44"),
    (("CifarResNet", 56), RESNET, "cifar_resnet56"),
    (("CifarResNet", 110), RESNET, "cifar_resnet110"),
    (("CifarResNet", 20, 100), RESNET, "cifar_resnet20[num_classes=100]"),
    (("CifarResNet", 8, 7), RESNET, "cifar_resnet20[depth=8,num_classes=7]"),
    (("CifarVGG", 11), VGG, "cifar_vgg11_bn"),
    (("CifarVGG", 13), VGG, "cifar_vgg13_bn"),
    (("CifarVGG", 16), VGG, "cifar_vgg16_bn"),
    (("CifarVGG", 19), VGG, "cifar_vgg19_bn"),
    (("CifarVGG", 16, 100), VGG, "cifar_vgg16_bn[num_classes=100]"),
    (("CifarMobileNet",), MOBILENET, "cifar_mobilenet"),
    (("CifarMobileNet", 100), MOBILENET, "cifar_mobilenet[num_classes=100]"),
]


@pytest.mark.parametrize("net, probes, expected_arch", CASES, ids=[c[2] for c in CASES])
def test_cifar_families_match_pytorch_and_are_detected(net, probes, expected_arch, torch_state_dict, torch,
                                                       reference, cifar_reference):
    torch.manual_seed(0)
    name, *args = net
    ref = reference.randomize_batchnorm(getattr(cifar_reference, name)(*args))
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == expected_arch

    modules, features = probes
    seen, handles = _record(modules(ref))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected_out = ref(x).numpy()
        expected = {k: v.numpy() for k, v in features(ref, seen).items()}
    for handle in handles:
        handle.remove()

    got = jax.jit(model.features)(model.params, to_nhwc(x.numpy()))
    assert got["output"].shape == expected_out.shape
    assert max_rel_diff(got["output"], expected_out) <= 1e-4
    for name, want in expected.items():
        want = to_nhwc(want) if want.ndim == 4 else want
        assert got[name].shape == want.shape, name
        assert max_rel_diff(got[name], want) <= 1e-4, name


@pytest.mark.parametrize("arch, blocks, extra", [
    ("cifar_resnet56", 27, [f"block{k}_sum" for k in range(1, 28)] + ["stem", "layer1", "layer2", "layer3"]),
    ("cifar_vgg16_bn", 13, [f"conv{k}" for k in range(1, 14)] + ["flat"]),
    ("cifar_mobilenet", 13, ["stem"]),
])
def test_feature_names_cover_every_block(arch, blocks, extra):
    module, _, spec, _ = models.create(arch)
    feats = jax.eval_shape(lambda p, x: module.apply(p, x)[1], models.abstract_params(arch), spec.example(2))
    assert set(feats) == {f"block{k}" for k in range(1, blocks + 1)} | set(extra) | {"pre_logits"}


def test_explicit_arch_converts_without_detection(torch_state_dict, torch, reference, cifar_reference):
    torch.manual_seed(0)
    ref = reference.randomize_batchnorm(cifar_reference.CifarResNet(20, num_classes=100))
    model = converters.from_state_dict(torch_state_dict(ref), arch="cifar_resnet20[num_classes=100]")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x).numpy()
    assert max_rel_diff(model(to_nhwc(x.numpy())), expected) <= 1e-4


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("net", [
    lambda tv, ref: tv.models.resnet18(weights=None),
    lambda tv, ref: tv.models.resnet18(weights=None, num_classes=10),
    lambda tv, ref: tv.models.vgg16_bn(weights=None, num_classes=10),
    lambda tv, ref: tv.models.vgg11(weights=None),
    lambda tv, ref: ref.MLP(),
    lambda tv, ref: ref.LeNet(channels=3),
], ids=["tv_resnet18", "tv_resnet18_10", "tv_vgg16_bn", "tv_vgg11", "mlp", "lenet"])
def test_detect_ignores_other_families(net, torch, torchvision, reference):
    with torch.device("meta"):  # shapes only: nothing is allocated
        shapes = _shapes(net(torchvision, reference))
    assert cifar.detect(shapes) is None
