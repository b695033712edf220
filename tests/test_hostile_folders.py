"""Named regressions for issue 9's hostile Hugging Face folders: every file read resolves inside
the folder, odd config.json / shard index contents get one line, the source digest covers exactly
the files read, and a folder's pickles go through jaxprov's whitelist even with torch installed."""

import json
import os

import numpy as np
import pytest

import converters
from converters import readers
from jaxprov.errors import CheckpointError, UnsafeCheckpointError
from tests.hostile_files import (BERT_CONFIG, bert_folder, bert_state_dict, op_call, op_value, safetensors_bytes,
                                 state_dict_pickle, tensor_record, write_pt)

INDEX = "model.safetensors.index.json"


def _refused(folder, match, kind=CheckpointError):
    with pytest.raises(kind, match=match) as err:
        converters.load_checkpoint(folder)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.fixture
def folder(tmp_path):
    return bert_folder(tmp_path / "bert", shards=2)


def _set_index(folder, weight_map):
    (folder / INDEX).write_text(json.dumps({"weight_map": weight_map}))


def _outside_shard(tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(safetensors_bytes(bert_state_dict(fill=1.0)))
    return outside


def test_valid_sharded_folder_loads(folder):
    model = converters.load_checkpoint(folder)
    assert model.arch.startswith("bert-base[vocab_size=30,hidden_size=8")


# -- path escapes --------------------------------------------------------------------------------

def test_shard_index_with_an_absolute_path_is_refused(tmp_path, folder):
    outside = _outside_shard(tmp_path)
    _set_index(folder, {k: str(outside) for k in bert_state_dict()})
    assert "leads outside the folder" in _refused(folder, str(outside))


def test_shard_index_with_dotdot_is_refused(tmp_path, folder):
    _outside_shard(tmp_path)
    _set_index(folder, {k: "../outside.safetensors" for k in bert_state_dict()})
    _refused(folder, "'../outside.safetensors' leads outside the folder")


def test_symlinked_shard_leading_out_is_refused(tmp_path, folder):
    outside = _outside_shard(tmp_path)
    shard = next(folder.glob("model-00001-*.safetensors"))
    shard.unlink()
    shard.symlink_to(outside)
    _refused(folder, "leads outside the folder")


def test_symlinked_config_leading_out_is_refused(tmp_path, folder):
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd")
    _refused(folder, "'config.json' leads outside the folder")


def test_symlink_inside_the_folder_is_followed(tmp_path):
    folder = bert_folder(tmp_path / "bert")
    (folder / "real").mkdir()
    (folder / "model.safetensors").rename(folder / "real" / "weights.safetensors")
    (folder / "model.safetensors").symlink_to("real/weights.safetensors")
    assert converters.load_checkpoint(folder).arch.startswith("bert-base")


def test_outside_fifo_named_by_the_index_is_never_opened(tmp_path, folder):
    fifo = tmp_path / "outside.safetensors"
    os.mkfifo(fifo)  # opening it would block this test forever
    _set_index(folder, {k: "../outside.safetensors" for k in bert_state_dict()})
    _refused(folder, "leads outside")


def test_fifo_and_device_inside_the_folder_are_refused(tmp_path):
    folder = bert_folder(tmp_path / "bert")
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    _refused(folder, "a FIFO, not a checkpoint file")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to("/dev/zero")
    _refused(folder, "leads outside|a device")


# -- the source digest ---------------------------------------------------------------------------

def test_digest_covers_every_file_read_and_only_those(tmp_path, folder):
    before = converters.source_digest(folder)
    (folder / "README.md").write_text("not read by the converter")
    assert converters.source_digest(folder) == before
    shard = next(folder.glob("model-00002-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one weight bit
    shard.write_bytes(bytes(data))
    changed = converters.source_digest(folder)
    assert changed != before
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert converters.source_digest(folder) != changed
    assert {p.name for p in readers.source_files(folder)} == {"config.json", INDEX, shard.name,
                                                              shard.name.replace("00002-of", "00001-of")}


def test_digest_of_a_folder_with_an_outside_shard_is_refused_not_partial(tmp_path, folder):
    outside = _outside_shard(tmp_path)
    _set_index(folder, {k: str(outside) for k in bert_state_dict()})
    with pytest.raises(CheckpointError, match="leads outside"):
        converters.source_digest(folder)


def test_convert_recomputes_after_a_shard_changes(tmp_path, folder, monkeypatch):
    import jaxprov

    monkeypatch.setenv("JAXPROV_HOME", str(tmp_path / "home"))
    out = tmp_path / "stored"
    _, _, first = jaxprov.convert(folder, out)
    shard = next(folder.glob("model-00001-*.safetensors"))
    shard.write_bytes(safetensors_bytes({k: v + 1 for k, v in readers.read_state_dict(shard).items()}))
    with pytest.raises(jaxprov.StoreError, match="already holds another model"):
        jaxprov.convert(folder, out)  # a new digest: not "already converted; nothing recomputed"
    assert first


# -- shard indexes -------------------------------------------------------------------------------

@pytest.mark.parametrize("index,match", [
    ("[]", "malformed shard index"),
    ('{"weight_map": []}', "malformed shard index"),
    ('{"weight_map": {}}', "malformed shard index"),
    ('{"weight_map": {"a": 3}}', "malformed shard index"),
    ('{"weight_map": {"a": null}}', "malformed shard index"),
    ('{"metadata": {}}', "malformed shard index"),
    ('{"weight_map": {"a": "model.safetensors.index.json"}}', "is not a .safetensors file"),
    ('{"weight_map": {"a": ""}}', "is not a .safetensors file"),
    ('{"weight_map": {"a": "x.safetensors"}, "weight_map": {}}', "names 'weight_map' twice"),
    ("[" * 50000 + "]" * 50000, "not valid JSON"),
    ("{not json", "not valid JSON"),
    ('{"weight_map": {"a": "missing.safetensors"}}', "no such file"),
    ('{"weight_map": {"a": "sub/../../x.safetensors"}}', "leads outside"),
])
def test_odd_shard_index(folder, index, match):
    (folder / INDEX).write_text(index)
    _refused(folder, match)


def test_tensor_in_two_shards_is_refused(folder):
    names = sorted(p.name for p in folder.glob("model-*.safetensors"))
    tensors = readers.read_state_dict(folder / names[0])
    key = sorted(tensors)[0]
    second = readers.read_state_dict(folder / names[1])
    (folder / names[1]).write_bytes(safetensors_bytes({**second, key: tensors[key]}))
    _refused(folder, f"tensor '{key}' is also in another shard")


# -- config.json ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (dict(num_hidden_layers="1"), "num_hidden_layers is '1', not a valid int"),
    (dict(num_hidden_layers=1.0), "not a valid int"),
    (dict(num_hidden_layers=True), "not a valid int"),
    (dict(hidden_size=-8), "hidden_size is -8"),
    (dict(vocab_size=10**12), "vocab_size is 1000000000000"),
    (dict(vocab_size=10**100), "not a valid int"),
    (dict(layer_norm_eps="x"), "layer_norm_eps"),
    (dict(layer_norm_eps=-1.0), "layer_norm_eps"),
    (dict(hidden_act=3), "hidden_act"),
    (dict(hidden_act="evil"), "hidden_act 'evil' is not supported"),
    (dict(architectures="BertModel"), "architectures"),
    (dict(architectures=[3]), "architectures"),
    (dict(architectures=["GPT2Model"]), "GPT2Model checkpoints are not supported"),
    (dict(architectures=["BertForSequenceClassification"], id2label=[1, 2]), "id2label is not an object"),
    (dict(architectures=["BertForSequenceClassification"], num_labels="3"), "num_labels"),
    (dict(model_type=3), "model_type 3 is not supported"),
    (dict(model_type=["bert"]), "is not supported"),
    (dict(position_embedding_type=["x"]), "position_embedding_type"),
    (dict(num_hidden_layers=12, intermediate_size=3000, hidden_size=1024, num_attention_heads=16),
     "describes a model of .* bytes but the weight files hold"),
])
def test_odd_config_json(tmp_path, change, match):
    folder = bert_folder(tmp_path / "bert")
    config = {**json.loads((folder / "config.json").read_text()), **change}
    (folder / "config.json").write_text(json.dumps(config))
    assert "config.json" in _refused(folder, match)


@pytest.mark.parametrize("text,match", [
    ("[]", "not a JSON object"), ('"bert"', "not a JSON object"), ("{", "not valid JSON"),
    ('{"model_type": "bert", "model_type": "gpt2"}', "names 'model_type' twice"),
    ('{"model_type": "bert", "x": ' + "[" * 50000 + "]" * 50000 + "}", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_config_json_that_is_not_an_object(tmp_path, text, match):
    folder = bert_folder(tmp_path / "bert")
    (folder / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    _refused(folder, match)


def test_name_or_path_of_odd_type_falls_back_to_the_folder_name(tmp_path):
    folder = bert_folder(tmp_path / "bert", config={"_name_or_path": 5})
    assert converters.load_checkpoint(folder).name == "bert"


# -- one pickle policy ---------------------------------------------------------------------------

def _bin_folder(tmp_path, pickle_bytes, storages):
    folder = tmp_path / "binbert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG))
    write_pt(folder / "pytorch_model.bin", pickle_bytes, storages)
    return folder


def test_pytorch_model_bin_in_a_folder_goes_through_the_whitelist_with_torch_installed(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = bert_state_dict(fill=0.5)
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, folder / "pytorch_model.bin")
    model = converters.load_checkpoint(folder)
    word = model.params["params"]["embeddings"]["word_embeddings"]["embedding"]
    assert np.all(np.asarray(word) == 0.5)


def test_legacy_format_bin_in_a_folder_is_refused_with_torch_installed(tmp_path):
    torch = pytest.importorskip("torch")
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG))
    torch.save({k: torch.from_numpy(v) for k, v in bert_state_dict().items()}, folder / "pytorch_model.bin",
               _use_new_zipfile_serialization=False)
    _refused(folder, "refused to load: a plain pickle .*legacy", kind=UnsafeCheckpointError)


def test_code_executing_pickle_in_a_folder_is_one_line_and_never_runs(tmp_path):
    pytest.importorskip("torch")  # with torch installed, torch.load must still never see the file
    marker = tmp_path / "pwned"
    body = (b"\x80\x02}(" + op_value("embeddings.word_embeddings.weight") + tensor_record("0", 6, 0, (2, 3), (3, 1))
            + op_value("x") + op_call("os", "system", f"touch {marker}") + b"u.")
    folder = _bin_folder(tmp_path, body, {"0": bytes(24)})
    _refused(folder, r"pytorch_model\.bin: refused to load: the pickle asks for os\.system",
             kind=UnsafeCheckpointError)
    assert not marker.exists()


def test_zero_weights_stay_zero_through_transformers(tmp_path):
    folder = _bin_folder(tmp_path, state_dict_pickle({}), {})
    (folder / "pytorch_model.bin").unlink()
    (folder / "model.safetensors").write_bytes(safetensors_bytes(bert_state_dict()))
    model = converters.load_checkpoint(folder)
    import jax

    assert all(not np.asarray(leaf).any() for leaf in jax.tree_util.tree_leaves(model.params))


def test_config_shapes_that_transformers_would_reinitialise_are_refused(tmp_path):
    pytest.importorskip("torch")
    folder = bert_folder(tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32}))  # weights hold 16
    _refused(folder, "transformers could not build the model|have other shapes than config.json gives")
