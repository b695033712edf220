"""Named regressions for issue 9's hostile checkpoint files: each crafted file gets one clear
CheckpointError (never another exception, a crash, or bytes from outside the file), and no file
may make the reader allocate more than it declares and holds."""

import json
import os
import socket
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from converters import readers
from converters.readers import read_state_dict
from jaxprov.errors import CheckpointError, UnsafeCheckpointError
from tests.hostile_files import (op_call, op_global, op_value, set_flag_bits, state_dict_pickle, tensor_record,
                                 write_pt, write_safetensors, zero_pt, zero_safetensors_header)


def _refused(path, match, kind=CheckpointError, **kwargs):
    with pytest.raises(kind, match=match) as err:
        read_state_dict(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def _pt(tmp_path, name="x.pt", storages=None, **records):
    return write_pt(tmp_path / name, state_dict_pickle(records), storages or {"0": bytes(24)})


# -- the crafted base files are what torch writes ------------------------------------------------

def test_crafted_checkpoint_reads_like_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    raw = np.arange(6, dtype=np.float32).tobytes()
    path = write_pt(tmp_path / "m.pt", state_dict_pickle({
        "w": tensor_record("0", 6, 0, (2, 3), (3, 1)), "t": tensor_record("0", 6, 1, (2, 2), (1, 3), parameter=True),
        "e": tensor_record("1", 1, 0, (4,), (0,))}), {"0": raw, "1": np.float32(7).tobytes()})
    expected = torch.load(path, weights_only=True)
    got = read_state_dict(path)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key].detach().numpy())


def test_view_ending_exactly_at_the_storage_end_is_accepted(tmp_path):
    raw = np.arange(6, dtype=np.float32).tobytes()
    got = read_state_dict(_pt(tmp_path, storages={"0": raw}, tail=tensor_record("0", 6, 4, (2,), (1,))))
    np.testing.assert_array_equal(got["tail"], [4, 5])


# -- out-of-bounds views -------------------------------------------------------------------------

def test_negative_storage_offset_is_refused(tmp_path):
    _refused(_pt(tmp_path, w=tensor_record(offset=-4096)), "storage offset")


def test_negative_strides_are_refused(tmp_path):
    _refused(_pt(tmp_path, w=tensor_record(offset=5, size=(2, 3), stride=(-3, -1))), "negative dimension or stride")


def test_negative_dimension_is_refused(tmp_path):
    _refused(_pt(tmp_path, w=tensor_record(size=(-2, 3))), "negative dimension or stride")


@pytest.mark.parametrize("offset", [6, 2**31, 2**40, 2**62, 2**200])
def test_deep_offsets_are_refused_without_reading(tmp_path, offset):
    _refused(_pt(tmp_path, w=tensor_record(offset=offset, size=(1,), stride=(1,))), "reaches element")


def test_highest_element_past_the_storage_is_refused(tmp_path):
    _refused(_pt(tmp_path, w=tensor_record(offset=1, size=(2, 3), stride=(3, 1))), "reaches element 6 of storage 0")
    _refused(_pt(tmp_path, w=tensor_record(size=(3, 3), stride=(1, 2))), "reaches element 6")


def test_zero_strides_amplification_is_refused_before_allocating(tmp_path):
    path = _pt(tmp_path, storages={"0": bytes(4)}, w=tensor_record("0", 1, 0, (30000, 30000), (0, 0)))
    tracemalloc.start()
    try:
        _refused(path, "memory bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path.stat().st_size < 2000 and peak < 4 * 2**20  # a 3.6 GB view was declared


def test_small_expanded_tensor_with_zero_stride_still_reads(tmp_path):
    got = read_state_dict(_pt(tmp_path, storages={"0": np.float32(3).tobytes()}, e=tensor_record("0", 1, 0, (5,), (0,))))
    np.testing.assert_array_equal(got["e"], [3] * 5)


def test_many_views_of_one_storage_count_against_the_budget(tmp_path):
    big = 2**20  # a 4 MiB storage viewed 30 times: 120 MiB of tensors from a 4 MiB file
    records = {f"v{i}": tensor_record("0", big, 0, (big,), (1,)) for i in range(30)}
    _refused(_pt(tmp_path, storages={"0": bytes(4 * big)}, **records), "memory bomb")


# -- storages and their zip entries --------------------------------------------------------------

def test_zip_bomb_of_unreferenced_storages_is_never_decompressed(tmp_path):
    storages = {"0": bytes(24), **{f"junk{i}": bytes(64 * 2**20) for i in range(3)}}
    path = write_pt(tmp_path / "bomb.pt", state_dict_pickle({"w": tensor_record("0", 6, 0, (2, 3), (3, 1))}),
                    storages, deflate=[k for k in storages if k != "0"])
    assert path.stat().st_size < 2 * 2**20  # 192 MiB of unreferenced zeros
    tracemalloc.start()
    try:
        got = read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert set(got) == {"w"} and peak < 8 * 2**20


def test_referenced_deflate_bomb_is_refused(tmp_path):
    n = 16 * 2**20
    path = write_pt(tmp_path / "bomb.pt", state_dict_pickle({"w": tensor_record("0", n // 4, 0, (n // 4,), (1,))}),
                    {"0": bytes(n)}, deflate=["0"])
    _refused(path, "zip bomb")


def test_compressed_storage_of_real_data_reads(tmp_path):
    raw = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    path = write_pt(tmp_path / "z.pt", state_dict_pickle({"w": tensor_record("0", 1000, 0, (1000,), (1,))}),
                    {"0": raw.tobytes()}, deflate=["0"])
    np.testing.assert_array_equal(read_state_dict(path)["w"], raw)


def test_terabyte_tensor_is_refused_without_memory_error(tmp_path):
    numel = 2**38  # 1 TiB of float32 declared, 24 bytes held
    _refused(_pt(tmp_path, w=tensor_record("0", numel, 0, (2**19, 2**19), (2**19, 1))), "declares .* bytes but its archive entry")


def test_overflowing_shape_is_refused_without_memory_error(tmp_path):
    _refused(_pt(tmp_path, w=tensor_record(size=(2**63, 2**63), stride=(0, 0))), "reaches element|memory bomb")
    _refused(_pt(tmp_path, w=tensor_record(size=(2**64,), stride=(1,))), "reaches element")


def test_byte_limit_is_configurable_and_named(tmp_path, monkeypatch):
    path = zero_pt(tmp_path / "z.pt")
    assert read_state_dict(path)["w"].shape == (2, 3)
    _refused(path, r"more than the limit of 10;.*JAXPROV_MAX_CHECKPOINT_BYTES", limit=10)
    monkeypatch.setenv("JAXPROV_MAX_CHECKPOINT_BYTES", "10")
    _refused(path, "more than the limit of 10")
    monkeypatch.setenv("JAXPROV_MAX_CHECKPOINT_BYTES", "lots")
    with pytest.raises(CheckpointError, match="JAXPROV_MAX_CHECKPOINT_BYTES='lots' is not a positive"):
        read_state_dict(path)


def test_storage_size_must_agree_with_its_entry(tmp_path):
    _refused(_pt(tmp_path, storages={"0": bytes(20)}, w=tensor_record()), "declares 24 bytes but its archive entry holds 20")


def test_missing_storage_entry(tmp_path):
    _refused(_pt(tmp_path, w=tensor_record(storage_key="7")), "storage 7 is missing")


def test_one_storage_declared_with_two_types(tmp_path):
    _refused(_pt(tmp_path, a=tensor_record(), b=tensor_record(storage_class="IntStorage")), "declared twice")


def test_bad_deflate_stream(tmp_path):
    raw = np.random.default_rng(0).standard_normal(6).astype(np.float32).tobytes()
    path = write_pt(tmp_path / "d.pt", state_dict_pickle({"w": tensor_record()}), {"0": raw}, deflate=["0"])
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("archive/data/0")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start:start + info.compress_size] = b"\xff" * info.compress_size
    path.write_bytes(bytes(data))
    _refused(path, "corrupt or truncated PyTorch checkpoint")


def test_encrypted_entry(tmp_path):
    path = zero_pt(tmp_path / "e.pt")
    set_flag_bits(path, "archive/data/0", 0x1)
    _refused(path, "encrypted")


def test_unsupported_compression(tmp_path):
    path = tmp_path / "c.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", state_dict_pickle({"w": tensor_record()}))
        z.writestr("archive/data/0", bytes(24), compress_type=zipfile.ZIP_LZMA)
    _refused(path, "unsupported compression")


def test_duplicate_zip_entries(tmp_path):
    path = zero_pt(tmp_path / "d.pt")
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/data/0", np.ones(6, np.float32).tobytes())
    _refused(path, "two entries with the same name")


def test_big_endian_and_oversized_pickle(tmp_path):
    path = tmp_path / "be.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", state_dict_pickle({"w": tensor_record()}))
        z.writestr("archive/byteorder", "big")
    _refused(path, "big-endian")


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_truncated_zip_at_any_point(tmp_path, fraction):
    full = zero_pt(tmp_path / "full.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full[: int(len(full) * fraction)])
    _refused(cut, "truncated|corrupt")


# -- rebuild records with odd arguments ----------------------------------------------------------

ODD_RECORDS = {
    "storage is an int": dict(pid=bytes(op_value(3)), extra=None),
    "offset is a string": dict(offset="0"),
    "offset is a float": dict(offset=0.5),
    "offset is a bool": dict(offset=True),
    "size is an int": dict(size=6),
    "size holds a string": dict(size=("2", 3)),
    "size holds None": dict(size=(None,)),
    "stride is shorter than size": dict(stride=(1,)),
    "stride is a list of floats": dict(stride=[3.0, 1.0]),
    "too many dimensions": dict(size=(1,) * 40, stride=(1,) * 40),
    "no arguments": dict(extra=()),
    "storage only": dict(extra=(b"Q",)),
    "persistent id too short": dict(pid=("storage", "x")),
    "persistent id of another kind": dict(pid=("module", "torch", "0", "cpu", 6)),
    "numel negative": dict(numel=-6),
    "numel a string": dict(numel="6"),
    "storage key an int": dict(pid=(b"(" + op_value("storage") + op_global("torch", "FloatStorage") + op_value(0)
                                    + op_value("cpu") + op_value(6) + b"t")),
}


@pytest.mark.parametrize("case", sorted(ODD_RECORDS))
def test_rebuild_record_with_odd_arguments(tmp_path, case):
    fields = dict(ODD_RECORDS[case])
    if fields.get("extra", ...) is None:
        fields.pop("extra")
        fields["extra"] = (b"Q", op_value(0), op_value((2, 3)), op_value((3, 1)), b"\x89")
    _refused(_pt(tmp_path, w=tensor_record(**fields)), None)


@pytest.mark.parametrize("storage_class", ["UntypedStorage", "Tensor", "Size", "storage", "FloatStorage\x00"])
def test_wrong_storage_class(tmp_path, storage_class):
    _refused(_pt(tmp_path, w=tensor_record(storage_class=storage_class)), "refused to load|corrupt",
             kind=CheckpointError)


@pytest.mark.parametrize("body,match", [
    (op_global("torch", "FloatStorage") + op_value(()) + b"R", "corrupt"),  # calling a storage type
    (op_call("collections", "OrderedDict", ("a", 1)), "OrderedDict record has arguments"),
    (op_call("torch._utils", "_rebuild_parameter", 5, True, None), "parameter record does not wrap a tensor"),
    (op_call("torch._utils", "_rebuild_parameter"), "parameter record does not wrap a tensor"),
    (tensor_record() + b"}" + b"b", "corrupt"),  # BUILD on a tensor record
    (tensor_record() + b"\x94" * 3, "corrupt"),  # MEMOIZE (protocol 4) inside a protocol-2 stream: fine, then junk
])
def test_odd_calls_and_states(tmp_path, body, match):
    path = write_pt(tmp_path / "o.pt", b"\x80\x02}(" + op_value("w") + tensor_record() + op_value("x") + body
                    + b"u.", {"0": bytes(24)})
    try:
        got = read_state_dict(path)
    except CheckpointError as err:
        assert "\n" not in str(err) and (match == "" or __import__("re").search(match, str(err)))
    else:  # a stray opcode that still leaves a valid state dict is fine; its tensors are then exact
        np.testing.assert_array_equal(got["w"], np.zeros((2, 3), np.float32))


def test_pickle_with_a_huge_length_field_does_not_allocate(tmp_path):
    body = b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc"  # BINBYTES8 of a terabyte
    path = write_pt(tmp_path / "l.pt", body, {})
    _refused(path, "corrupt or truncated")


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                          ("subprocess", "Popen"), ("torch", "load"), ("numpy", "frombuffer"),
                                          ("torch._utils", "_rebuild_device_tensor_from_numpy")])
def test_code_executing_globals_are_refused_and_nothing_runs(tmp_path, module, name):
    marker = tmp_path / "pwned"
    body = op_call(module, name, f"touch {marker}")
    path = write_pt(tmp_path / "evil.pt", b"\x80\x02}(" + op_value("w") + tensor_record() + op_value("p") + body
                    + b"u.", {"0": bytes(24)})
    _refused(path, rf"refused to load: the pickle asks for {module}\.{name}", kind=UnsafeCheckpointError)
    assert not marker.exists()


# -- safetensors headers -------------------------------------------------------------------------

def _st(tmp_path, header, data=bytes(30), **kwargs):
    return write_safetensors(tmp_path / "x.safetensors", header, data, **kwargs)


def test_valid_crafted_safetensors_reads(tmp_path):
    got = read_state_dict(_st(tmp_path, zero_safetensors_header()[0]))
    assert got["w"].shape == (2, 3) and got["b"].dtype == np.float16 and not got["w"].any()


@pytest.mark.parametrize("header", ["[]", "3", '"x"', "null", "[{}]"])
def test_safetensors_header_that_is_json_but_not_an_object(tmp_path, header):
    _refused(_st(tmp_path, header), "not a JSON object")


def _entry(**change):
    header, _ = zero_safetensors_header()
    header["w"].update(change)
    return header


@pytest.mark.parametrize("change,match", [
    (dict(data_offsets=[0.0, 24.0]), "malformed header entry"),
    (dict(data_offsets=["0", "24"]), "malformed header entry"),
    (dict(data_offsets=[-24, 0]), "do not match"),
    (dict(data_offsets=[24, 0]), "do not match"),
    (dict(data_offsets=[0, 24, 48]), "malformed header entry"),
    (dict(data_offsets={"a": 1}), "malformed header entry"),
    (dict(shape=[-2, -3]), "non-negative integers"),
    (dict(shape=[2**64, 2**64]), "do not match"),
    (dict(shape=[2.0, 3]), "non-negative integers"),
    (dict(shape=[True, 6]), "non-negative integers"),
    (dict(shape="23"), "malformed header entry"),
    (dict(dtype="F128"), "unsupported dtype"),
    (dict(dtype=5), "malformed header entry"),
    (dict(extra=1), "malformed header entry"),
])
def test_safetensors_malformed_entries(tmp_path, change, match):
    _refused(_st(tmp_path, _entry(**change)), match)


def test_safetensors_deep_nesting(tmp_path):
    _refused(_st(tmp_path, "[" * 100000 + "]" * 100000), "corrupt safetensors header")
    _refused(_st(tmp_path, '{"w": ' + "[" * 100000 + "]" * 100000 + "}"), "corrupt safetensors header|malformed")


def test_safetensors_huge_integer_text(tmp_path):
    _refused(_st(tmp_path, '{"w": {"dtype": "F32", "shape": [' + "9" * 10000 + '], "data_offsets": [0, 24]}}'),
             "corrupt safetensors header")


def test_safetensors_duplicate_keys(tmp_path):
    text = ('{"w": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}, '
            '"w": {"dtype": "F16", "shape": [3], "data_offsets": [24, 30]}}')
    _refused(_st(tmp_path, text), "names 'w' twice")


def test_safetensors_overlapping_offsets(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
    _refused(_st(tmp_path, header, bytes(24)), "overlaps the tensor before it")


def test_safetensors_gap_and_short_data(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    _refused(_st(tmp_path, header, bytes(16)), "leaves a gap")
    header = {"a": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}
    _refused(_st(tmp_path, header, bytes(20)), "cover 24 bytes but the data section holds 20")


def test_safetensors_header_length_field(tmp_path):
    header, data = zero_safetensors_header()
    _refused(_st(tmp_path, header, data, header_length=2**63), "header length")
    _refused(_st(tmp_path, header, data, header_length=3), "corrupt safetensors header")


def test_safetensors_bad_metadata(tmp_path):
    header, data = zero_safetensors_header()
    header["__metadata__"] = {"a": [1]}
    _refused(_st(tmp_path, header, data), "__metadata__")


# -- only regular files are opened ---------------------------------------------------------------

def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    _refused(fifo, "a FIFO, not a checkpoint file")
    with pytest.raises(CheckpointError, match="FIFO"):
        readers.open_regular(fifo)


def test_device_is_refused(tmp_path):
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")
    _refused(link, "a device, not a checkpoint file")
    with pytest.raises(CheckpointError, match="/dev/zero: a device"):
        read_state_dict("/dev/zero")


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.pt"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        _refused(path, "a socket")


def test_unreadable_file_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = zero_pt(tmp_path / "locked.pt")
    path.chmod(0)
    _refused(path, "cannot be read .*permissions")


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_info_on_a_fifo_or_device_exits_with_one_line(tmp_path, target):
    if target == "fifo":
        target = tmp_path / "model.pt"
        os.mkfifo(target)
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # The timeout only turns a regression (a blocking open) into a failure instead of a hung suite.
    result = subprocess.run([sys.executable, "-m", "jaxprov.cli", "info", str(target)], capture_output=True,
                            text=True, timeout=120, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and str(target) in lines[0], result.stderr
    assert "FIFO" in lines[0] or "device" in lines[0]


def test_zip_with_bytes_cut_from_its_start_is_one_line(tmp_path):
    full = zero_pt(tmp_path / "full.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full[40:])  # the directory now points before the file's start (a negative seek)
    _refused(cut, "corrupt or truncated")
