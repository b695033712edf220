"""Naming a family infers its free fields from the checkpoint, by the same detection as naming nothing;
a key that does not fit names the one that would."""

import numpy as np
import pytest

import converters
import jaxprov
from jaxprov import store
from jaxprov.errors import ConversionError


def _meta_shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _torchvision_shapes(variant, **kwargs):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return _meta_shapes(getattr(torchvision.models, variant)(weights=None, **kwargs))


@pytest.mark.parametrize("named, variant, kwargs, expected", [
    ("resnet18", "resnet18", {"num_classes": 10}, "resnet18[num_classes=10]"),
    ("resnet50", "resnet50", {"num_classes": 7}, "resnet50[num_classes=7]"),
    ("vgg11_bn", "vgg11_bn", {"num_classes": 37}, "vgg11_bn[num_classes=37]"),
    ("mobilenet_v2", "mobilenet_v2", {"num_classes": 10}, "mobilenet_v2[num_classes=10]"),
    ("vit_b_16", "vit_b_16", {"num_classes": 5}, "vit_b_16[num_classes=5]"),
    ("resnet18", "resnet18", {}, "resnet18"),
])
def test_named_torchvision_family_takes_its_head_from_the_checkpoint(named, variant, kwargs, expected):
    shapes = _torchvision_shapes(variant, **kwargs)
    assert converters.resolve_arch(shapes, named) == expected
    assert converters.resolve_arch(shapes, named) == converters.resolve_arch(shapes)  # one code path


def test_named_cifar_family_takes_its_classes_from_the_checkpoint():
    torch = pytest.importorskip("torch")
    from tests.torch_reference_cifar import CifarResNet, CifarVGG

    with torch.device("meta"):
        resnet, vgg = CifarResNet(depth=20, num_classes=100), CifarVGG(depth=11, num_classes=43)
    assert converters.resolve_arch(_meta_shapes(resnet), "cifar_resnet20") == "cifar_resnet20[num_classes=100]"
    assert converters.resolve_arch(_meta_shapes(vgg), "cifar_vgg11_bn") == "cifar_vgg11_bn[num_classes=43]"


def test_named_bert_takes_vocabulary_and_positions_from_the_checkpoint():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    config = transformers.BertConfig(vocab_size=1000, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                     intermediate_size=1536, max_position_embeddings=128)
    with torch.device("meta"):
        shapes = _meta_shapes(transformers.BertModel(config))
    assert converters.resolve_arch(shapes, "minilm-l6") == "minilm-l6[vocab_size=1000,max_position_embeddings=128]"


def test_explicit_settings_stay_and_what_the_name_fixes_is_not_inferred():
    shapes = _torchvision_shapes("resnet18", num_classes=10)
    # resnet34's depth is what its name says: the key does not fit, and conversion says which would.
    assert converters.resolve_arch(shapes, "resnet34") == "resnet34"
    # A setting written in brackets is the user's, even when it makes the weights misfit.
    assert converters.resolve_arch(shapes, "resnet18[num_classes=1000]") == "resnet18"
    assert converters.free_fields("resnet18") == ("num_classes",)
    assert converters.free_fields("resnet18[num_classes=10]") == ()
    assert converters.free_fields("cifar_resnet20") == ("num_classes",)  # depth is in the name


def test_load_of_a_torchvision_checkpoint_named_by_family(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path / "resnet18-cifar10.pt"
    torch.save(net.state_dict(), path)
    model = jaxprov.load(path, arch="resnet18")
    assert model.arch == "resnet18[num_classes=10]"
    np.testing.assert_array_equal(model.params["params"]["fc"]["kernel"], net.fc.weight.detach().numpy().T)
    # The stored model answers to the same name.
    saved = store.save_model(model, tmp_path / "stored")
    assert jaxprov.load(saved, arch="resnet18").arch == "resnet18[num_classes=10]"
    with pytest.raises(jaxprov.errors.StoreError, match="not resnet34"):
        jaxprov.load(saved, arch="resnet34")
    # Converting again under the same name reuses the stored conversion.
    out, _, converted = jaxprov.convert(path, tmp_path / "converted", arch="resnet18")
    assert converted
    _, again, converted = jaxprov.convert(path, out, arch="resnet18")
    assert not converted and again.arch == "resnet18[num_classes=10]"


def test_a_misfit_names_the_key_that_would_fit():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in torchvision.models.resnet18(weights=None, num_classes=10).state_dict().items()}
    with pytest.raises(ConversionError, match=r"did you mean --arch resnet18\[num_classes=10\]\?") as err:
        converters.from_state_dict(state, arch="resnet34")
    assert any("missing: params/layer3_5/conv1/kernel" in p for p in err.value.problems)
    assert str(err.value).count("\n") == 0
    with pytest.raises(ConversionError, match=r"did you mean --arch resnet18\[num_classes=10\]\?"):
        converters.from_state_dict(state, arch="resnet18[num_classes=1000]")


def test_a_misfit_without_any_fitting_key_suggests_nothing():
    shapes = _torchvision_shapes("resnet18", num_classes=10)
    state = {k: np.zeros(s, np.float32) for k, s in shapes.items() if not k.startswith("layer4")}
    with pytest.raises(ConversionError) as err:
        converters.from_state_dict(state, arch="resnet18")
    assert "did you mean" not in str(err.value)
