"""The generic torch converter (converters/torch_generic.py): a user's own nn.Module, traced by
torchax, with parity against torch's forward, a store round trip, the CLI and one-line errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprov
from jaxprov import cli, store
from jaxprov.errors import ArchitectureError, ConversionError, StoreError
from jaxprov.model import InputSpec
from tests.conftest import max_rel_diff, to_nhwc

SPEC = InputSpec("image", "NHWC", (16, 16, 3), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def torchax():
    return pytest.importorskip("torchax")


@pytest.fixture(scope="module")
def modules(torchax):
    from tests import generic_modules
    return generic_modules


@pytest.fixture(scope="module")
def cnn(modules, reference):
    import torch

    torch.manual_seed(0)
    net = reference.randomize_batchnorm(modules.SmallCNN(width=8, num_classes=5))
    return net, jaxprov.from_torch(net, SPEC, module_kwargs={"width": 8})  # route auto: extract_jax first


def test_custom_cnn_matches_torch(cnn, torch):
    net, model = cnn
    assert model.arch.startswith("torch:SmallCNN@") and model.meta["generic"]["route"] == "extract_jax"
    x = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
        h = torch.relu(net.bn1(net.conv1(torch.from_numpy(x))))
        h = torch.relu(net.bn2(net.conv2(h)))
        hidden = torch.relu(net.hidden(net.pool(h).flatten(1))).numpy()
    assert max_rel_diff(jax.jit(model.apply)(model.params, jnp.asarray(to_nhwc(x))), expected) <= 1e-4
    features = jax.jit(model.features)(model.params, jnp.asarray(to_nhwc(x)))
    assert max_rel_diff(features["pre_logits"], hidden) <= 1e-4  # the input of the last Linear
    # The params are plain nested dicts named as the state dict; running statistics are not weights.
    assert model.params["batch_stats"]["bn1"]["running_var"].shape == (8,)
    assert set(model.params["params"]) == {"conv1", "bn1", "conv2", "bn2", "hidden", "head"}


def test_traced_function_vmaps_and_keeps_strict_promotion(cnn):
    _, model = cnn
    x = SPEC.example(2)
    stacked = jaxprov.stack_params([model, model.replace(name="copy")])
    out = jax.vmap(model.apply, in_axes=(0, None))(stacked, x)
    np.testing.assert_allclose(out[1], model.apply(model.params, x), rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda z: model.apply(model.params, z).sum())(x)
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))
    # torchax's torch-style broadcasting is scoped to the traced function: jaxprov's stays strict.
    with pytest.raises(ValueError, match="rank_promotion"):
        jnp.ones((2, 3)) + jnp.ones((3,))


def test_equal_modules_share_one_function(cnn, modules, torch):
    _, model = cnn
    other = jaxprov.from_torch(modules.SmallCNN(width=8, num_classes=5), SPEC, module_kwargs={})
    assert other.arch == model.arch and other.module is model.module  # compiled once per arch
    net = modules.SmallCNN(width=4).eval()
    wider = jaxprov.from_torch(net, SPEC, route="export", module_kwargs={"width": 4})
    assert wider.meta["generic"]["route"] == "export" and wider.arch != model.arch
    x = np.random.default_rng(2).normal(size=(5, 3, 16, 16)).astype(np.float32)  # another batch size
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert max_rel_diff(jax.jit(wider.apply)(wider.params, jnp.asarray(to_nhwc(x))), expected) <= 1e-4


def test_store_round_trip_records_how_to_rebuild(cnn, tmp_path, monkeypatch):
    _, model = cnn
    directory = jaxprov.save_model(model, tmp_path / "m")
    meta = store.read_meta(directory)
    assert meta["generic"]["recipe"] == {"kind": "module", "class": "tests.generic_modules:SmallCNN",
                                         "kwargs": {"width": 8, "num_classes": 5}}
    assert "torchax" in meta["generic"]["loading_needs"]
    loaded = jaxprov.load(directory)
    assert loaded.arch == model.arch and loaded.module is model.module
    x = SPEC.example(2)
    np.testing.assert_array_equal(loaded.apply(loaded.params, x), model.apply(model.params, x))
    monkeypatch.setattr(store, "_REBUILDER", [])  # as on a machine without torch / torchax
    with pytest.raises(StoreError, match="loading it needs torch and torchax"):
        store.load_model(directory)


def test_cli_converts_a_users_module(cnn, tmp_path, capsys, torch):
    net, model = cnn
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    args = ["convert", str(tmp_path / "weights.pth"), "--module", "tests.generic_modules:SmallCNN",
            "--module-kwargs", '{"width": 8}', "--input-shape", "16,16,3", "--input-mean", "0.5,0.4,0.3",
            "--input-std", "0.2,0.25,0.3", "--out", str(tmp_path / "out")]
    assert cli.main(args) == 0
    converted = jaxprov.load(tmp_path / "out")
    assert converted.arch == model.arch
    jax.tree_util.tree_map(np.testing.assert_array_equal, converted.params, model.params)
    assert cli.main(args) == 0 and "already converted" in capsys.readouterr().out


def test_cli_info_reads_a_users_module(cnn, tmp_path, capsys, torch):
    net, model = cnn
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    module = ["--module", "tests.generic_modules:SmallCNN", "--module-kwargs", '{"width": 8}',
              "--input-shape", "16,16,3", "--input-mean", "0.5,0.4,0.3", "--input-std", "0.2,0.25,0.3"]
    assert cli.main(["info", str(tmp_path / "weights.pth"), *module, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == model.arch and info["num_params"] == model.num_params
    assert tuple(info["input_spec"]["shape"]) == (16, 16, 3) and info["input_spec"]["std"] == [0.2, 0.25, 0.3]
    assert info["source"]["path"] == str(tmp_path / "weights.pth")
    assert not (tmp_path / "out").exists()  # info converts in memory, stores nothing
    # Without --module the weights fit no family; with the wrong kwargs they do not fit the class.
    assert cli.main(["info", str(tmp_path / "weights.pth")]) == 2
    assert cli.main(["info", str(tmp_path / "weights.pth"), *module[:2], "--module-kwargs", '{"width": 4}',
                     *module[4:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "do not fit SmallCNN" in err[1]
    # A stored model already records its module.
    stored = jaxprov.save_model(model, tmp_path / "stored")
    assert cli.main(["info", str(stored), *module]) == 2
    assert "already a converted jaxprov model" in capsys.readouterr().err


@pytest.mark.parametrize("extra,match", [
    (["--module", "tests.no_such_module:Net"], "cannot import tests.no_such_module"),
    (["--module", "tests.generic_modules:Missing"], "has no Missing"),
    (["--module", "tests.generic_modules:max_rel_diff"], "has no max_rel_diff|not a torch.nn.Module"),
    (["--module", "not a path"], "not of the form package.module:Class"),
    (["--module", "tests.generic_modules:SmallCNN", "--module-kwargs", '{"wdth": 4}'], "fails .*unexpected keyword"),
    (["--module", "tests.generic_modules:SmallCNN", "--module-kwargs", "[1]"], "must be a JSON object"),
    (["--module", "tests.generic_modules:SmallCNN", "--module-kwargs", '{"width": 4}'],
     "do not fit SmallCNN .*conv1.weight has shape"),
    (["--module", "tests.generic_modules:NeedsArgument"], "fails .*missing 1 required"),
    (["--module-kwargs", "{}"], "needs --module"),
])
def test_cli_errors_are_one_line(cnn, tmp_path, capsys, torch, extra, match):
    net, _ = cnn
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    code = cli.main(["convert", str(tmp_path / "weights.pth"), "--input-shape", "16,16,3",
                     "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "out").exists()


def test_modules_that_do_not_trace_are_refused(modules):
    vector = InputSpec("vector", "NF", (4,), raw_range=None)
    with pytest.raises(ConversionError, match="torchax could not trace.*extract_jax: .*export: "):
        jaxprov.from_torch(modules.DataDependent(), vector)
    # A tensor made inside forward() without device=: extract_jax fails, the export route works.
    six = InputSpec("vector", "NF", (6,), raw_range=None)
    with pytest.raises(ConversionError, match="extract_jax: "):
        jaxprov.from_torch(modules.ConstantInForward(), six, route="extract_jax")
    assert jaxprov.from_torch(modules.ConstantInForward(), six).meta["generic"]["route"] == "export"


def test_parity_failure_is_refused_with_the_measured_error(modules):
    with pytest.raises(ConversionError, match=r"differ from torch's by \d\.\d\de-\d+ \(tolerance 1e-15\)"):
        jaxprov.from_torch(modules.SmallCNN(width=4), SPEC, route="extract_jax", tolerance=1e-15)


def test_bad_arguments(modules):
    with pytest.raises(jaxprov.ArgumentError, match="must be a torch.nn.Module"):
        jaxprov.from_torch(lambda x: x, SPEC)
    with pytest.raises(jaxprov.ArgumentError, match="must be a jaxprov.InputSpec"):
        jaxprov.from_torch(modules.SmallCNN(), (16, 16, 3))
    with pytest.raises(ArchitectureError, match="give H,W,C"):
        cli_spec = __import__("converters.torch_sources", fromlist=["x"]).input_spec_from_shape
        cli_spec("16,16")
    assert json.dumps(SPEC.to_json())  # the spec a generic model records is JSON


def test_archs_lists_the_generic_sources(capsys):
    assert cli.main(["archs"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "--module package.module:Class" in out and "timm:NAME" in out and ".pt2" in out
