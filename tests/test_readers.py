"""Checkpoint reading is safe and strict: hostile pickles are refused before anything runs,
broken files get one clear error, and every tensor comes back bit-exact."""

import os
import pickle

import numpy as np
import pytest

from converters.readers import read_state_dict
from jaxprov.errors import CheckpointError, UnsafeCheckpointError


def _tensors():
    import torch  # only tests that took the `torch` fixture (skipped without torch) get here

    torch.manual_seed(0)
    return {"w": torch.randn(4, 3), "half": torch.randn(5).half(), "bf16": torch.randn(2, 2).bfloat16(),
            "long": torch.arange(6), "transposed": torch.randn(3, 4).t(), "scalar": torch.tensor(2.5),
            "slice": torch.randn(10)[3:7], "flag": torch.tensor([True, False])}


def _save_safetensors(tensors, path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def _assert_equal(got, expected):
    assert set(got) == set(expected)
    for key, tensor in expected.items():
        assert got[key].shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(got[key].astype(np.float64), tensor.double().numpy(), err_msg=key)


def test_torch_zip_checkpoint_reads_bit_exact_without_torch_load(tmp_path, torch):
    path = tmp_path / "model.pt"
    torch.save(_tensors(), path)
    _assert_equal(read_state_dict(path), _tensors())


def test_nested_checkpoint_dict_and_dataparallel_prefix_are_unwrapped(tmp_path, torch):
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in _tensors().items()},
                "optimizer": {"lr": 0.1}}, path)
    _assert_equal(read_state_dict(path), _tensors())


def test_safetensors_reads_bit_exact(tmp_path, torch):
    path = tmp_path / "model.safetensors"
    _save_safetensors(_tensors(), path)
    _assert_equal(read_state_dict(path), _tensors())


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_executing_pickle_inside_a_torch_zip_is_refused_and_nothing_runs(tmp_path, torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    # A real torch checkpoint whose pickle also carries a payload: torch.save writes it faithfully.
    torch.save({"weight": torch.randn(2), "payload": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt.*(posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proves the file really was a live exploit
    assert marker.exists()


def test_bare_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": np.zeros(2), "payload": _Exploit(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="plain pickle"):
        read_state_dict(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # proves the file really was a live exploit
    assert marker.exists()


def test_whole_module_pickle_is_refused(tmp_path, torch):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.linear\.Linear.*state_dict"):
        read_state_dict(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_files_get_one_clear_error(tmp_path, suffix, torch):
    full = tmp_path / f"full{suffix}"
    if suffix == ".pt":
        torch.save(_tensors(), full)
    else:
        _save_safetensors(_tensors(), full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"cut\{suffix}.*(truncated|corrupt)") as err:
        read_state_dict(cut)
    assert "\n" not in str(err.value)


def test_empty_missing_and_non_model_directories(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "absent.pt")
    (tmp_path / "notes").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_state_dict(tmp_path / "notes")


def test_checkpoint_without_tensors_is_rejected(tmp_path, torch):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no tensor state dict"):
        read_state_dict(path)
