"""Parity of the ViT port with torchvision's VisionTransformer, and architecture detection."""

import pytest

torch = pytest.importorskip("torch")  # every test here reads a PyTorch / torchvision model
torchvision = pytest.importorskip("torchvision")

import converters  # noqa: E402
from converters.torchvision_vit import detect  # noqa: E402
from jaxprov.errors import ArchitectureError  # noqa: E402
from tests.conftest import max_rel_diff, to_nhwc  # noqa: E402
from tests.torch_reference import LeNet, MLP  # noqa: E402

TINY = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
TINY_ARCH = "vit_b_16[num_classes=10,image_size=32,patch_size=8,hidden_dim=32,num_layers=2,num_heads=2,mlp_dim=64]"


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every bias and every constant-initialised tensor (zero head and class token, LN ones),
    so a wrongly mapped one shows up in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or float(p.std()) == 0.0:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def shapes_of(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_parity(ref, model, batch):
    side = model.input_spec.shape[0]
    x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))
    encoded = {}
    hook = ref.encoder.register_forward_hook(lambda mod, inp, out: encoded.setdefault("tokens", out))
    with torch.no_grad():
        expected = ref(x).numpy()
    hook.remove()
    feats = model.features(model.params, to_nhwc(x.numpy()))
    assert feats["output"].shape == expected.shape
    assert {f"block{i}" for i in range(len(ref.encoder.layers))} <= set(feats)
    diffs = {"logits": max_rel_diff(feats["output"], expected),
             "tokens": max_rel_diff(feats["tokens"], encoded["tokens"].numpy()),
             "pre_logits": max_rel_diff(feats["pre_logits"], encoded["tokens"][:, 0].numpy())}
    assert max(diffs.values()) <= 1e-4, diffs


def test_vit_b_16_matches_torchvision_and_is_detected(torch_state_dict):
    torch.manual_seed(0)
    ref = randomize(torchvision.models.vit_b_16(weights=None))
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == "vit_b_16"
    assert model.input_spec.shape == (224, 224, 3)
    check_parity(ref, model, batch=2)


def test_changed_depth_size_and_classes_are_detected_and_match(torch_state_dict):
    torch.manual_seed(0)
    ref = randomize(torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=12, hidden_dim=768, mlp_dim=3072, num_classes=7))
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == "vit_b_16[num_classes=7,image_size=32,num_layers=1]"
    check_parity(ref, model, batch=2)


def test_tiny_custom_vit_converts_with_explicit_arch(torch_state_dict):
    torch.manual_seed(0)
    ref = randomize(torchvision.models.VisionTransformer(**TINY))
    state = torch_state_dict(ref)
    model = converters.from_state_dict(state, arch=TINY_ARCH)
    assert model.arch == TINY_ARCH
    check_parity(ref, model, batch=2)
    # The weights do not say how many heads split the width: unknown widths are refused, not guessed.
    assert detect(shapes_of(ref)) is None
    with pytest.raises(ArchitectureError):
        converters.from_state_dict(state)


@pytest.mark.parametrize("build, expected", [
    (lambda: torchvision.models.vit_b_32(), "vit_b_32"),
    (lambda: torchvision.models.vit_l_16(), "vit_l_16"),
    (lambda: torchvision.models.vit_l_32(num_classes=10), "vit_l_32[num_classes=10]"),
    (lambda: torchvision.models.vit_h_14(image_size=518), "vit_h_14[image_size=518]"),
    (lambda: torchvision.models.vit_b_16(image_size=384, num_classes=21), "vit_b_16[num_classes=21,image_size=384]"),
])
def test_torchvision_variants_are_detected(build, expected):
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        shapes = shapes_of(build())
    assert detect(shapes) == expected
    assert converters.detect_arch(shapes) == expected


@pytest.mark.parametrize("build", [lambda: MLP(), lambda: LeNet(), lambda: torchvision.models.resnet18()])
def test_other_families_are_not_taken_for_a_vit(build):
    with torch.device("meta"):
        assert detect(shapes_of(build())) is None


def test_representation_layer_vit_is_refused():
    # Known widths, so detect proposes vit_b_16, but heads.pre_logits has no place in the table.
    with torch.device("meta"):
        shapes = shapes_of(torchvision.models.vit_b_16(representation_size=16))
    with pytest.raises(ArchitectureError):
        converters.detect_arch(shapes)
