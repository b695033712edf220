"""Every method on generic (torchax) models: a network converted both ways, by its hand-written
family and by the generic converter, gets the same signature; generic and hand-written models mix
in one zoo, in `scan` and in `compare`."""

import json

import numpy as np
import pytest

import converters
import jaxprov
from jaxprov.cli import main

SMALL = {"ddv": {"n_seeds": 8, "iters": 5}, "gradient_field": {"n_seeds": 4, "steps": 4},
         "sac": {"n_seeds": 16}, "ipguard": {"n_seeds": 8, "iters": 5}, "cka": {"n_seeds": 16},
         "mistakes": {"n_seeds": 64, "min_probes": 1}}


@pytest.fixture(scope="module")
def lenets(torch, reference):
    """(hand-written lenet, the same weights traced by torchax, an independent generic lenet)."""
    pytest.importorskip("torchax")
    torch.manual_seed(0)
    net = reference.LeNet().eval()
    hand = converters.from_state_dict({k: v.numpy() for k, v in net.state_dict().items()}, name="hand")
    generic = jaxprov.from_torch(net, hand.input_spec, name="generic")
    torch.manual_seed(1)
    other = jaxprov.from_torch(reference.LeNet().eval(), hand.input_spec, name="other")
    assert hand.arch == "lenet" and generic.arch == other.arch != hand.arch
    return hand, generic, other


@pytest.mark.parametrize("method", list(SMALL))
def test_every_method_gives_the_hand_written_signature(lenets, method):
    hand, generic, _ = lenets
    zoo = jaxprov.Zoo([hand, generic], seeds="mnist:test", method_config=SMALL)
    signatures = zoo.signatures(method)
    np.testing.assert_allclose(signatures.matrix[1], signatures.matrix[0], atol=1e-5)
    assert not signatures.dead.any()


def test_weights_and_a_mixed_zoo(lenets):
    hand, generic, other = lenets
    zoo = jaxprov.Zoo([generic, generic.replace(name="copy"), other], seeds="mnist:test", method_config=SMALL)
    weights = zoo.similarity("weights")
    assert weights["generic", "copy"] == pytest.approx(1.0, abs=1e-6) and weights["generic", "other"] < 0.5
    mixed = jaxprov.Zoo([hand, generic, other], seeds="mnist:test", method_config=SMALL)
    ddv = mixed.similarity("ddv")  # one probe set, models of two arch keys
    assert ddv["hand", "generic"] == pytest.approx(1.0, abs=1e-5) and ddv["hand", "other"] < ddv["hand", "generic"]


def test_scan_and_compare_a_mixed_folder(lenets, tmp_path, capsys, torch, reference):
    hand, generic, other = lenets
    folder = tmp_path / "models"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(reference.LeNet().state_dict(), folder / "hand.pt")  # a checkpoint of the hand-written family
    jaxprov.save_model(generic, folder / "generic")  # stored generic models, rebuilt on load
    jaxprov.save_model(other, folder / "other")
    out = tmp_path / "scan"
    assert main(["scan", str(folder), "--out", str(out), "--method", "cka", "--seeds", "synthetic"]) == 0
    report = json.loads((out / "report.json").read_text())
    labels = report["labels"]
    cka = report["methods"]["cka"]["matrix"]
    assert sorted(labels) == ["generic", "hand", "other"]
    assert cka[labels.index("hand")][labels.index("generic")] == pytest.approx(1.0, abs=1e-5)
    assert cka[labels.index("hand")][labels.index("other")] < 0.99
    capsys.readouterr()
    assert main(["compare", str(folder / "hand.pt"), str(folder / "generic"), "--method", "cka", "--seeds",
                 "synthetic", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["methods"]["cka"]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_resnet18_generic_equals_hand_written(torch, torchvision, reference):
    """torchvision resnet18 through both paths: the same SAC signature to 1e-5 (forward only: the
    gradient methods are compared on LeNet above, which costs a fraction of resnet18's compile)."""
    pytest.importorskip("torchax")
    torch.manual_seed(0)
    net = reference.randomize_batchnorm(torchvision.models.resnet18(num_classes=10))
    hand = converters.from_state_dict({k: v.numpy() for k, v in net.state_dict().items()}, name="hand")
    spec = hand.input_spec.__class__(**{**hand.input_spec.to_json(), "shape": (32, 32, 3)})
    hand = hand.replace(input_spec=spec)
    generic = jaxprov.from_torch(net, spec, name="generic")  # parity with torch checked at conversion
    zoo = jaxprov.Zoo([hand, generic], seeds="synthetic", method_config=SMALL)
    signatures = zoo.signatures("sac")
    np.testing.assert_allclose(signatures.matrix[1], signatures.matrix[0], atol=1e-5)
