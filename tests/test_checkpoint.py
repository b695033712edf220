"""Resumable training checkpoints (jaxprov.checkpoint), the one format MAP's mask run and DNA's
training share: a round trip, another run's checkpoint ignored with a line, and every damaged or
mis-shaped file refused with one line naming it, before any of its declared arrays is allocated.
The two callers' sides of the rule are tested in tests/test_protect.py and tests/test_dna.py."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprov.checkpoint import load_tree, save_tree
from jaxprov.errors import CheckpointError

TREE = {"scores": jnp.arange(6, dtype=jnp.float32).reshape(3, 2), "opt": (jnp.asarray(7, jnp.int32),)}


def rewrite_member(path, name: str, data: bytes) -> None:
    """Replace (or add) one member of a checkpoint's zip, keeping the others."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for n, raw in members.items():
            z.writestr(n, raw)


def test_a_checkpoint_round_trips_and_another_runs_is_ignored_with_a_line(tmp_path):
    path = tmp_path / "run.ckpt"
    save_tree(path, TREE, "stamp-a", {"step": 4, "history": [{"step": 4}]})
    assert np.load(path).files  # a plain zip numpy can list
    tree, meta = load_tree(path, TREE, "stamp-a")
    assert meta == {"step": 4, "history": [{"step": 4}]}
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(tree["opt"] + (tree["scores"],),
                                                                         TREE["opt"] + (TREE["scores"],)))
    lines = []
    assert load_tree(path, TREE, "stamp-b", what="MAP mask run", log=lines.append) is None
    assert lines == [f"{path}: a checkpoint of another MAP mask run (other settings or data); starting afresh"]
    with pytest.warns(UserWarning, match="a checkpoint of another training run"):
        assert load_tree(path, TREE, "stamp-b") is None
    assert load_tree(tmp_path / "absent", TREE, "stamp-a") is None


def _damaged(tmp_path):
    """(what, path) of files that must each be refused with one line."""
    good = tmp_path / "good"
    save_tree(good, TREE, "s", {"step": 1})
    raw = good.read_bytes()
    cases = {"junk": b"not a checkpoint", "empty": b"", "truncated": raw[: len(raw) // 2],
             "npz of numpy": None, "bad meta json": None, "other format": None, "wrong shape": None,
             "wrong dtype": None, "extra array": None, "short data": None, "huge declared shape": None,
             "object dtype": None, "template refuses the record": None}
    out = []
    for what, data in cases.items():
        path = tmp_path / what.replace(" ", "_")
        path.write_bytes(raw if data is None else data)
        if what == "npz of numpy":
            np.savez(path.with_suffix(".npz"), leaf0=np.zeros(3))
            path = path.with_suffix(".npz")
        elif what == "bad meta json":
            rewrite_member(path, "meta.json", b"{not json")
        elif what == "other format":
            rewrite_member(path, "meta.json", json.dumps({"format": "jaxprov-map-checkpoint-1", "stamp": "s",
                                                          "meta": {}}).encode())
        elif what in ("wrong shape", "wrong dtype", "object dtype"):
            array = {"wrong shape": np.zeros((2, 3), np.float32), "wrong dtype": np.zeros((3, 2), np.float64),
                     "object dtype": np.asarray([[None] * 2] * 3, object)}[what]
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=True)
            rewrite_member(path, "leaf1.npy", buffer.getvalue())  # leaf1: "scores" (leaves sort by key)
        elif what == "extra array":
            rewrite_member(path, "leaf9.npy", b"")
        elif what == "short data":
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.zeros((3, 2), np.float32))
            rewrite_member(path, "leaf1.npy", buffer.getvalue()[:-4])
        elif what == "huge declared shape":  # 2**40 floats declared, none there
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (2 ** 20, 2 ** 20)})
            rewrite_member(path, "leaf1.npy", buffer.getvalue())
        out.append((what, path))
    return out


def test_damaged_or_mis_shaped_checkpoints_are_refused_with_one_line_and_allocate_nothing(tmp_path):
    strict = lambda meta: TREE if meta == {"step": 1} else None  # noqa: E731
    for what, path in _damaged(tmp_path):
        if what == "template refuses the record":
            rewrite_member(path, "meta.json", json.dumps({"format": "jaxprov-checkpoint-1", "stamp": "s",
                                                          "meta": {"step": -1}}).encode())
        tracemalloc.start()
        with pytest.raises(CheckpointError) as err:
            load_tree(path, strict, "s", what="DNA training")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        line = str(err.value)
        assert "\n" not in line and line.startswith(f"{path}: ") and "delete it" in line, (what, line)
        assert "DNA training" in line and peak < 1 << 20, (what, peak)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_tree(folder, TREE, "s")
