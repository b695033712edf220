"""torchvision ResNet / VGG / MobileNetV2: parity of every variant in eval mode, and detection."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # every test here reads a PyTorch / torchvision model
torchvision = pytest.importorskip("torchvision")

import converters  # noqa: E402
from converters import torchvision as tv_source  # noqa: E402
from jaxprov.errors import ConversionError  # noqa: E402
from tests.conftest import max_rel_diff, to_nhwc  # noqa: E402
from tests.torch_reference import LeNet, MLP, randomize_batchnorm  # noqa: E402

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
VGGS = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
VARIANTS = RESNETS + VGGS + ["mobilenet_v2"]


def meta_shapes(variant, **kwargs):
    """The state dict's key -> shape table, built on the meta device: no memory, no init cost."""
    with torch.device("meta"):
        module = getattr(torchvision.models, variant)(weights=None, **kwargs)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def taps(ref):
    """Feature name -> the torch module whose output it is; "pre_logits" is the head's input instead."""
    if isinstance(ref, torchvision.models.ResNet):
        return {"stem": ref.maxpool, **{f"layer{k}": getattr(ref, f"layer{k}") for k in range(1, 5)},
                "pre_logits": ref.fc}
    if isinstance(ref, torchvision.models.VGG):
        relus = [m for m in ref.features if isinstance(m, torch.nn.ReLU)]
        pools = [m for m in ref.features if isinstance(m, torch.nn.MaxPool2d)]
        return {"stem": relus[0], **{f"stage{s}": m for s, m in enumerate(pools, 1)},
                "pre_logits": ref.classifier[6]}
    stage_ends = (1, 3, 6, 10, 13, 16, 17)  # last block of each (t, c, n, s) row of the paper's Table 2
    return {"stem": ref.features[0], **{f"stage{s}": ref.features[n] for s, n in enumerate(stage_ends, 1)},
            "last_conv": ref.features[18], "pre_logits": ref.classifier[1]}


def saturate_relu6(ref):
    """Triple every BatchNorm gain: at random init no activation reaches 6, so ReLU6 would go untested."""
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(3.0)


def record(name, seen):
    def hook(_module, args, out):
        value = args[0] if name == "pre_logits" else out
        seen[name] = value.detach().clone().numpy()
    return hook


# Image sizes: ResNets and MobileNetV2 at 64 px to keep CPU cost low; VGG at 224 (7x7 map, the plain
# pool) and at 48 / 64 px, where AdaptiveAvgPool2d((7, 7)) replicates a 1x1 or 2x2 map into uneven bins.
SIZES = {**{v: 64 for v in RESNETS}, "mobilenet_v2": 64, "vgg11": 224, "vgg11_bn": 48, "vgg13": 64,
         "vgg13_bn": 224, "vgg16": 48, "vgg16_bn": 64, "vgg19": 64, "vgg19_bn": 48}


@pytest.mark.parametrize("variant, kwargs, expected", [(v, {}, v) for v in VARIANTS] + [
    ("resnet18", {"num_classes": 10}, "resnet18[num_classes=10]")])
def test_matches_torchvision_and_is_detected(variant, kwargs, expected, torch_state_dict):
    torch.manual_seed(0)
    ref = randomize_batchnorm(getattr(torchvision.models, variant)(weights=None, **kwargs))
    if variant == "mobilenet_v2":
        saturate_relu6(ref)
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == expected
    x = torch.randn(2, 3, SIZES[variant], SIZES[variant])
    seen = {}
    hooks = [module.register_forward_hook(record(name, seen)) for name, module in taps(ref).items()]
    with torch.no_grad():
        seen["output"] = ref(x).numpy()
    for hook in hooks:
        hook.remove()
    # The deepest ResNets run eagerly: compiling 100+ convs costs more CPU than running them op by op.
    features = model.features if variant in ("resnet101", "resnet152") else jax.jit(model.features)
    feats = features(model.params, to_nhwc(x.numpy()))
    for name, expected_value in seen.items():
        expected_value = to_nhwc(expected_value) if expected_value.ndim == 4 else expected_value
        assert feats[name].shape == expected_value.shape, name
        assert max_rel_diff(feats[name], expected_value) <= 1e-4, name


@pytest.mark.parametrize("variant, kwargs, expected", [
    ("resnet50", {"num_classes": 10}, "resnet50[num_classes=10]"),
    ("vgg16_bn", {"num_classes": 10}, "vgg16_bn[num_classes=10]"),
    ("vgg19", {"num_classes": 37}, "vgg19[num_classes=37]"),
    ("mobilenet_v2", {"num_classes": 10}, "mobilenet_v2[num_classes=10]"),
])
def test_detects_changed_heads(variant, kwargs, expected):
    assert converters.detect_arch(meta_shapes(variant, **kwargs)) == expected


@pytest.mark.parametrize("variant", ["resnext50_32x4d", "wide_resnet50_2", "alexnet", "mobilenet_v3_small",
                                     "efficientnet_b0", "vit_b_16", "densenet121"])
def test_declines_other_torchvision_families(variant):
    assert tv_source.detect(meta_shapes(variant)) is None


@pytest.mark.parametrize("net", [MLP, LeNet])
def test_declines_small_families(net, torch_state_dict):
    shapes = {k: v.shape for k, v in torch_state_dict(net()).items()}
    assert tv_source.detect(shapes) is None


def test_explicit_arch_converts_and_a_wrong_one_lists_the_problems(torch_state_dict):
    torch.manual_seed(0)
    state = torch_state_dict(torchvision.models.resnet18(weights=None, num_classes=10))
    model = converters.from_state_dict(state, arch="resnet18[num_classes=10]")
    assert model.arch == "resnet18[num_classes=10]"
    np.testing.assert_array_equal(model.params["params"]["fc"]["kernel"], state["fc.weight"].T)
    with pytest.raises(ConversionError) as err:
        converters.from_state_dict(state, arch="resnet34")
    assert any("missing: params/layer3_5/conv1/kernel" in p for p in err.value.problems)
    assert any(p.startswith("mis-shaped: fc.weight") for p in err.value.problems)
