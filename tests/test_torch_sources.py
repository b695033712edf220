"""Generic sources (converters/torch_sources.py): Hugging Face folders of model types without a
family, timm models by name, torch.export archives (and what such an archive may not hold)."""

import json
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprov
from jaxprov import cli
from jaxprov.errors import CheckpointError, UnsafeCheckpointError
from tests.conftest import max_rel_diff, to_nhwc


@pytest.fixture(scope="module")
def transformers():
    pytest.importorskip("torchax")
    return pytest.importorskip("transformers")


def _tokens(vocab, seq=8):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, vocab, size=(2, seq)).astype(np.int32)
    mask = np.ones((2, seq), np.int32)
    mask[1, seq - 3:] = 0  # padding must be masked as transformers masks it
    return {"input_ids": ids, "attention_mask": mask}


HF = {  # small configs: hidden 32, 2 layers
    "distilbert": ("DistilBertModel", "DistilBertConfig", dict(vocab_size=100, dim=32, n_layers=2, n_heads=4,
                                                               hidden_dim=64, max_position_embeddings=64)),
    "roberta": ("RobertaForSequenceClassification", "RobertaConfig",
                dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=66, num_labels=3)),
    "gpt2": ("GPT2Model", "GPT2Config", dict(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                             bos_token_id=0, eos_token_id=0)),
    "vit": ("ViTForImageClassification", "ViTConfig", dict(image_size=32, patch_size=8, hidden_size=32,
                                                          num_hidden_layers=2, num_attention_heads=4,
                                                          intermediate_size=64, num_labels=4)),
}


@pytest.fixture(scope="module")
def hf_models(transformers, torch, tmp_path_factory):
    """name -> (transformers model, its save_pretrained folder, the jaxprov Model loaded from it)."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, (cls, config_cls, config) in HF.items():
        torch.manual_seed(0)
        model = getattr(transformers, cls)(getattr(transformers, config_cls)(**config)).eval()
        model.save_pretrained(root / name)
        out[name] = (model, root / name, jaxprov.load(root / name))
    return out


@pytest.mark.parametrize("name", list(HF))
def test_hugging_face_folders_match_transformers(hf_models, torch, name):
    reference, _, model = hf_models[name]
    assert model.arch.startswith(f"torch:hf.{HF[name][0]}@")
    if name == "vit":
        x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            expected = reference(pixel_values=torch.from_numpy(x)).logits.numpy()
        assert model.output_kind == "logits" and model.input_spec.shape == (32, 32, 3)
        got = jax.jit(model.apply)(model.params, jnp.asarray(to_nhwc(x)))
        assert max_rel_diff(got, expected) <= 1e-4
        return
    tokens = _tokens(100)
    with torch.no_grad():
        out = reference(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in tokens.items()})
    expected = (out.logits if name == "roberta" else out.last_hidden_state).numpy()
    got = np.asarray(jax.jit(model.apply)(model.params, tokens))
    if name != "roberta":  # padded positions of a base model are not compared (as for BERT)
        got, expected = got[tokens["attention_mask"] == 1], expected[tokens["attention_mask"] == 1]
    assert max_rel_diff(got, expected) <= 1e-4
    assert model.output_kind == ("logits" if name == "roberta" else "last_hidden_state")
    assert model.input_spec.modality == "text" and model.input_spec.vocab_size == 100


@pytest.mark.parametrize("name", ["distilbert", "gpt2"])
def test_text_models_take_inputs_embeds(hf_models, name):
    _, _, model = hf_models[name]
    tokens = _tokens(100)
    embeds = model.fns.embed(model.params, tokens)  # the hook gradient methods use
    from_ids = model.apply(model.params, tokens)
    from_embeds = model.apply(model.params, {"inputs_embeds": embeds, "attention_mask": tokens["attention_mask"]})
    np.testing.assert_allclose(from_embeds, from_ids, rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda z: model.apply(model.params, {"inputs_embeds": z}).sum())(embeds)
    assert grad.shape == embeds.shape and float(jnp.abs(grad).sum()) > 0
    # Gradient fields on text reach a generic model through the same hook.
    zoo = jaxprov.Zoo([model, model.replace(name="copy")], seeds="synthetic",
                      method_config={"gradient_field": {"n_seeds": 2, "steps": 2}})
    signatures = zoo.signatures("gradient_field")
    assert not signatures.dead.any()
    np.testing.assert_allclose(signatures.matrix[0], signatures.matrix[1], atol=1e-6)


def test_hugging_face_store_round_trip(hf_models, tmp_path):
    _, _, model = hf_models["distilbert"]
    loaded = jaxprov.load(jaxprov.save_model(model, tmp_path / "stored"))
    assert loaded.arch == model.arch and loaded.module is model.module
    assert store_recipe(tmp_path / "stored")["kind"] == "huggingface"


def store_recipe(directory):
    return json.loads((directory / "jaxprov.json").read_text())["generic"]["recipe"]


def test_hugging_face_custom_code_is_refused(hf_models, tmp_path):
    _, folder, _ = hf_models["gpt2"]
    import shutil

    target = shutil.copytree(folder, tmp_path / "custom")
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(CheckpointError, match="custom code"):
        jaxprov.load(target)
    (target / "config.json").write_text(json.dumps({**config, "architectures": ["os.system"]}))
    with pytest.raises(CheckpointError, match="not a transformers model class"):
        jaxprov.load(target)
    (target / "config.json").write_text(json.dumps({**config, "n_embd": 4096, "n_layer": 48}))
    with pytest.raises(CheckpointError, match="describes a model of .* bytes"):
        jaxprov.load(target)


def test_scan_every_hugging_face_type(hf_models, tmp_path, capsys):
    """DistilBERT, RoBERTa, GPT-2 and ViT folders side by side: scan groups them by input (text,
    image), exits 0 (nothing skipped or warned about), no model is dead (the probes fit every model's
    positions; `compare` of a type without a family: the RoBERTa test below)."""
    root = next(iter(hf_models.values()))[1].parent
    out = tmp_path / "scan"
    assert cli.main(["scan", str(root), "--out", str(out), "--method", "cka", "--seeds", "synthetic"]) == 0
    groups = {}
    for report in out.glob("*/report.json"):
        data = json.loads(report.read_text())
        groups[report.parent.name] = sorted(data["labels"])
        assert not any(m["dead"] for m in data["models"].values()), data["models"]
        matrix = np.asarray(data["methods"]["cka"]["matrix"], float)
        assert np.isfinite(matrix).all() and np.allclose(np.diag(matrix), 1.0, atol=1e-5)
    assert groups == {"text": ["distilbert", "gpt2", "roberta"], "image-32x32x3": ["vit"]}, groups
    assert "skipped" not in capsys.readouterr().err


def _roberta_lineage(transformers, torch, folder):
    """save_pretrained folders of a random RoBERTa classifier, its copy fine-tuned (10 Adam steps,
    lr 1e-4, on a synthetic task: the loss adds problem_type to its config.json) and an
    independent one. RoBERTa has no hand-written family; its positions start at padding_idx + 1."""
    config = transformers.RobertaConfig(**HF["roberta"][2])
    torch.manual_seed(0)
    parent = transformers.RobertaForSequenceClassification(config).eval()
    parent.save_pretrained(folder / "parent")
    child = transformers.RobertaForSequenceClassification(config)
    child.load_state_dict(parent.state_dict())
    optimizer = torch.optim.Adam(child.parameters(), 1e-4)
    generator = torch.Generator().manual_seed(5)
    child.train()
    for _ in range(10):
        ids = torch.randint(3, 100, (32, 16), generator=generator)
        loss = child(input_ids=ids, labels=ids[:, 1] % 3).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    child.eval().save_pretrained(folder / "child")
    torch.manual_seed(1)
    transformers.RobertaForSequenceClassification(config).eval().save_pretrained(folder / "independent")


def test_scan_and_compare_a_folder_of_a_model_type_without_a_family(transformers, torch, tmp_path, capsys):
    """End to end from the CLI: the fine-tuned copy is closer to its parent than the independent
    model under weights and CKA, in `scan`'s matrices and in `compare`."""
    folder = tmp_path / "models"
    _roberta_lineage(transformers, torch, folder)
    out = tmp_path / "scan"
    # Exit 0: no entry skipped or warned about (jax's int64 -> int32 cast inside torchax is not a problem).
    assert cli.main(["scan", str(folder), "--out", str(out), "--method", "weights", "--method", "cka",
                     "--seeds", "synthetic"]) == 0
    assert "text: 3 models" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    index = {name: i for i, name in enumerate(report["labels"])}
    archs = {m["arch"] for m in report["models"].values()}
    assert len(archs) == 1 and archs.pop().startswith("torch:hf.RobertaForSequenceClassification@")
    assert not any(m["dead"] for m in report["models"].values())  # sequences fit the position table
    for method in ("weights", "cka"):
        matrix = report["methods"][method]["matrix"]
        row = matrix[index["parent"]]
        assert row[index["child"]] > row[index["independent"]] + 0.02, (method, matrix)
    similarity = {}
    for suspect in ("child", "independent"):
        assert cli.main(["compare", str(folder / "parent"), str(folder / suspect), "--method", "cka",
                         "--seeds", "synthetic", "--json"]) == 0
        similarity[suspect] = json.loads(capsys.readouterr().out)["methods"]["cka"]["similarity"]
    assert similarity["child"] > 0.9 > similarity["independent"], similarity
    assert similarity["child"] == pytest.approx(report["methods"]["cka"]["matrix"][index["parent"]][index["child"]],
                                                abs=1e-4)
    assert jaxprov.load(folder / "parent").input_spec.shape == (HF["roberta"][2]["max_position_embeddings"] - 2,)


# -- timm ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def timm():
    pytest.importorskip("torchax")
    return pytest.importorskip("timm")


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_timm_by_name(timm, torch, tmp_path, name, capsys):
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=7).eval()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    args = ["convert", str(tmp_path / "w.pth"), "--arch", f"timm:{name}", "--input-shape", "32,32,3",
            "--out", str(tmp_path / "out")]
    assert cli.main(args) == 0
    model = jaxprov.load(tmp_path / "out")
    assert model.arch.startswith(f"torch:timm.{name}@") and model.input_spec.mean == net.pretrained_cfg["mean"]
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert expected.shape == (2, 7)  # num_classes read from the checkpoint's classifier
    assert max_rel_diff(jax.jit(model.apply)(model.params, jnp.asarray(to_nhwc(x))), expected) <= 1e-4
    assert cli.main(args) == 0 and "already converted" in capsys.readouterr().out


def test_timm_models_scan_and_compare_from_the_cli(timm, torch, tmp_path, capsys):
    """Converted timm models are stored models like any other: a fine-tuned copy (every weight
    nudged) scores above an independently initialised network in scan and in compare."""
    torch.manual_seed(0)
    parent = timm.create_model("test_resnet", num_classes=5).eval()
    child = timm.create_model("test_resnet", num_classes=5).eval()
    child.load_state_dict(parent.state_dict())
    with torch.no_grad():
        for tensor in child.parameters():
            tensor.add_(0.01 * tensor.std().nan_to_num() * torch.randn_like(tensor))
    torch.manual_seed(1)
    independent = timm.create_model("test_resnet", num_classes=5).eval()
    folder = tmp_path / "models"
    for name, net in [("parent", parent), ("child", child), ("independent", independent)]:
        torch.save(net.state_dict(), tmp_path / f"{name}.pth")
        assert cli.main(["convert", str(tmp_path / f"{name}.pth"), "--arch", "timm:test_resnet",
                         "--input-shape", "32,32,3", "--out", str(folder / name)]) == 0
    capsys.readouterr()
    row, index = _scan_weights_row(folder, tmp_path / "scan", "parent", capsys)
    assert row[index["child"]] > 0.99 > row[index["independent"]], row
    similarity = {}
    for suspect in ("child", "independent"):
        assert cli.main(["compare", str(folder / "parent"), str(folder / suspect), "--method", "weights",
                         "--json"]) == 0
        similarity[suspect] = json.loads(capsys.readouterr().out)["methods"]["weights"]["similarity"]
    assert similarity["child"] == pytest.approx(row[index["child"]], abs=1e-5)
    assert similarity["independent"] == pytest.approx(row[index["independent"]], abs=1e-5)


def _scan_weights_row(folder, out, reference, capsys):
    """`jaxprov scan folder --method weights --seeds synthetic` (exit 0, no entry skipped): the
    reference's row of the weights matrix and {model name: index}."""
    assert cli.main(["scan", str(folder), "--out", str(out), "--method", "weights", "--seeds", "synthetic"]) == 0
    assert "skipped" not in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    index = {name: i for i, name in enumerate(report["labels"])}
    return report["methods"]["weights"]["matrix"][index[reference]], index


def test_timm_errors_are_one_line(timm, torch, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    for arch, match in [("timm:no_such_net", "not a timm architecture"),
                        ("timm:test_resnet", "do not fit timm.test_resnet")]:
        code = cli.main(["convert", str(tmp_path / "vit.pth"), "--arch", arch, "--input-shape", "32,32,3",
                         "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


# -- torch.export archives -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def archive(torch, tmp_path_factory):
    pytest.importorskip("torchax")
    from tests.generic_modules import SmallCNN
    from tests.torch_reference import randomize_batchnorm

    torch.manual_seed(0)
    net = randomize_batchnorm(SmallCNN())
    program = torch.export.export(net, (torch.randn(2, 3, 16, 16),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    path = tmp_path_factory.mktemp("pt2") / "cnn.pt2"
    torch.export.save(program, path)
    return net, path


def test_export_archive_converts_and_round_trips(archive, torch, tmp_path):
    net, path = archive
    assert cli.main(["convert", str(path), "--out", str(tmp_path / "out")]) == 0
    model = jaxprov.load(tmp_path / "out")
    assert model.arch.startswith("torch:export@") and model.input_spec.shape == (16, 16, 3)
    x = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert max_rel_diff(jax.jit(model.apply)(model.params, jnp.asarray(to_nhwc(x))), expected) <= 1e-4


def test_a_folder_of_export_archives_scans_and_compares(archive, torch, tmp_path, capsys):
    """Archives in a scanned folder load without warnings (a ZipFile left the archive's file open:
    every .pt2 entry was reported as skipped and scan exited 1); a copy is identical, an
    independently initialised network is not."""
    from tests.generic_modules import SmallCNN

    net, path = archive
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.pt2").write_bytes(path.read_bytes())
    (folder / "copy.pt2").write_bytes(path.read_bytes())
    torch.manual_seed(1)
    other = torch.export.export(SmallCNN().eval(), (torch.randn(2, 3, 16, 16),),
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(other, folder / "other.pt2")
    row, index = _scan_weights_row(folder, tmp_path / "scan", "a", capsys)
    assert row[index["copy"]] == pytest.approx(1.0, abs=1e-6) and row[index["other"]] < 0.9
    assert cli.main(["compare", str(folder / "a.pt2"), str(folder / "other.pt2"), "--method", "weights",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["methods"]["weights"]["similarity"] == pytest.approx(
        row[index["other"]], abs=1e-5)


def _rewrite(src, dst, change):
    """A copy of archive `src` with each entry's bytes passed through change(name, bytes)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def _json_edit(suffix, edit):
    def change(name, data):
        return json.dumps(edit(json.loads(data))).encode() if name.endswith(suffix) else data
    return change


def _first_weight_pickled(config):
    next(iter(config["config"].values()))["use_pickle"] = True
    return config


def _target(program, target):
    program["graph_module"]["graph"]["nodes"][0]["target"] = target
    return program


def _expr(program, text):
    values = program["graph_module"]["graph"]["tensor_values"]
    next(v for v in values.values() if "as_expr" in str(v["sizes"]))["sizes"][0]["as_expr"]["expr_str"] = text
    return program


@pytest.mark.parametrize("change,match", [
    (_json_edit("model_weights_config.json", _first_weight_pickled), "stored as a pickle"),
    (_json_edit("models/model.json", lambda p: _target(p, "torch.load")), "calls 'torch.load'"),
    (_json_edit("models/model.json", lambda p: _target(p, "builtins.eval")), "calls 'builtins.eval'"),
    (_json_edit("models/model.json", lambda p: _expr(p, "__import__('os').system('touch PWNED')")),
     "not a sympy expression"),
    (_json_edit("models/model.json", lambda p: _expr(p, "Max(Symbol('s1'), exec)")), "not a sympy constructor"),
    (lambda name, data: data if not name.endswith("archive_format") else data, None),
])
def test_export_archives_that_would_run_code_are_refused(archive, tmp_path, monkeypatch, change, match):
    _, path = archive
    monkeypatch.chdir(tmp_path)
    hostile = _rewrite(path, tmp_path / "hostile.pt2", change)
    if match is None:  # the unchanged copy converts: the rewriting itself is sound
        assert jaxprov.load(hostile).arch.startswith("torch:export@")
        return
    with pytest.raises(UnsafeCheckpointError, match=match):
        jaxprov.load(hostile)
    assert not (tmp_path / "PWNED").exists()


def test_export_archive_extra_files_are_refused(archive, tmp_path):
    _, path = archive
    with zipfile.ZipFile(path) as z:
        prefix = z.namelist()[0].split("/")[0]
    hostile = tmp_path / "aoti.pt2"
    _rewrite(path, hostile, lambda name, data: data)
    with zipfile.ZipFile(hostile, "a") as z:
        z.writestr(f"{prefix}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(UnsafeCheckpointError, match="not part of a plain torch.export archive"):
        jaxprov.load(hostile)
