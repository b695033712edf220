"""Issue 9's findings beyond the checkpoint readers, one named regression test each: the CLI and the
Python API end every bad input with one line (exit 2) and never hang; seeds, reports and scanned
folders are untrusted input."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxprov
from jaxprov import probes, report
from jaxprov.cli import main
from jaxprov.errors import ArgumentError, JaxprovError
from jaxprov.scan import scan_models

ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 300  # a hang guard, not a speed limit: the old failure never exited at all


def _run_cli(*argv, cwd=ROOT):
    """The CLI in its own process: proves the process exits (orbax threads once kept it alive)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "jaxprov.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("jaxprov: error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _cli_error(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxprov: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def stored(tmp_path):
    """Two small stored models (untrained, different keys): enough for any CLI path."""
    out = {}
    for i in range(2):
        model = jaxprov.models.init("lenet", jax.random.PRNGKey(i), name=f"m{i}")
        out[f"m{i}"] = jaxprov.save_model(model, tmp_path / "stored" / f"m{i}")
    return out


# -- failed writes end the process ------------------------------------------------------------


def test_failed_write_under_proc_exits_with_one_line(lenet_file):
    run = _run_cli("convert", lenet_file, "--out", "/proc/jaxprov-no-such-place/model")
    assert run.returncode == 2, run.stderr
    assert "/proc" in _one_error_line(run.stderr)


def test_unwritable_output_folder_exits_with_one_line(lenet_file, tmp_path):
    if os.geteuid() == 0:  # root writes through file modes; sysfs refuses even root
        out = Path("/sys/jaxprov-test-model")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "model"
    run = _run_cli("convert", lenet_file, "--out", out)
    assert run.returncode == 2, run.stderr
    line = _one_error_line(run.stderr)
    assert str(out.parent) in line and "writable" in line
    assert not out.exists()


def test_output_whose_parent_is_a_file(lenet_file, tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    err = _cli_error(["convert", lenet_file, "--out", tmp_path / "plain" / "model"], capsys)
    assert "plain is a file" in err


def test_output_name_too_long(lenet_file, tmp_path, capsys):
    for name in ("m" * 300, "m" * 250):  # over NAME_MAX; under it, but not its temporary sibling
        err = _cli_error(["convert", lenet_file, "--out", tmp_path / name], capsys)
        assert "too long" in err
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.pt"]


@pytest.fixture
def unreadable_file(tmp_path):
    if os.geteuid() == 0:  # root reads any mode; the kernel refuses reads of this file to everyone
        path = tmp_path / "unreadable.pt"
        path.symlink_to("/proc/self/mem")
        return path
    path = tmp_path / "unreadable.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    path.chmod(0)
    return path


def test_unreadable_input(unreadable_file, tmp_path, capsys):
    err = _cli_error(["convert", unreadable_file, "--out", tmp_path / "m"], capsys)
    assert "unreadable.pt" in err or "/proc/self/mem" in err
    err = _cli_error(["info", unreadable_file], capsys)
    assert "unreadable.pt" in err or "/proc/self/mem" in err
    with pytest.raises(JaxprovError):
        jaxprov.convert(unreadable_file, tmp_path / "m")


def test_fifo_given_to_info_and_convert_is_refused(tmp_path, capsys):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for argv in (["info", fifo], ["convert", fifo, "--out", tmp_path / "m"]):
        assert "pipe.pt: a FIFO, not a checkpoint file" in _cli_error(argv, capsys)


def test_os_error_no_check_foresaw_is_one_line(monkeypatch, capsys):
    from jaxprov import cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/somewhere/model")

    monkeypatch.setattr(cli, "_cmd_archs", refuse)
    err = _cli_error(["archs"], capsys)
    assert "/somewhere/model" in err and "Permission denied" in err


def test_a_bug_is_one_line_with_exit_3_and_its_traceback_on_request(monkeypatch, capsys):
    from jaxprov import cli

    def bug(args):
        raise KeyError("internal\nstate")

    monkeypatch.setattr(cli, "_cmd_archs", bug)
    monkeypatch.delenv("JAXPROV_DEBUG", raising=False)
    assert main(["archs"]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert err.startswith("jaxprov: internal error: KeyError") and err.count("\n") == 1 and "report" in err
    monkeypatch.setenv("JAXPROV_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["archs"])


# -- seeds ------------------------------------------------------------------------------------

SPEC = jaxprov.InputSpec("image", "NHWC", (28, 28, 1))
KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("name, array, message", [
    ("empty.npy", np.zeros((0, 28, 28), np.float32), "holds no seeds"),
    ("strings.npy", np.array([["a", "b"]] * 4), "must be numbers"),
    ("nan.npy", np.where(np.arange(4 * 28 * 28).reshape(4, 28, 28) == 5, np.nan, 0.5).astype(np.float32),
     "1 seed(s) hold NaN or Inf"),
    ("inf.npy", np.full((4, 28, 28), np.inf, np.float32), "4 seed(s) hold NaN or Inf"),
])
def test_bad_npy_seeds_are_one_line(tmp_path, name, array, message):
    np.save(tmp_path / name, array)
    with pytest.raises(JaxprovError) as err:
        probes.seeds(str(tmp_path / name), SPEC, 2, KEY)
    assert message in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


def test_npy_seeds_claiming_more_data_than_the_file_holds(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:  # a header claiming 3 TB, followed by 400 bytes
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**9, 28, 28)})
        fh.write(np.zeros(100, np.float32).tobytes())
    with pytest.raises(JaxprovError, match="cannot read as .npy"):
        probes.seeds(str(path), SPEC, 2, KEY)


def _npz_with(path, member: str, data: bytes):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
    return path


def test_npz_seeds_and_probes_files_claiming_more_data_than_they_hold(tmp_path):
    import io

    header = io.BytesIO()  # an .npy member whose header claims 3 TB, followed by 400 bytes
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 28, 28)})
    member = header.getvalue() + bytes(400)
    with pytest.raises(JaxprovError, match=r"array 'x' claims shape \(1000000000, 28, 28\)") as err:
        probes.seeds(str(_npz_with(tmp_path / "s.npz", "x.npy", member)), SPEC, 2, KEY)
    assert "s.npz" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(JaxprovError, match="claims shape"):
        probes.Probes.load(_npz_with(tmp_path / "p.npz", "__meta__.npy", member))


def test_seed_and_probes_files_over_the_size_bound_are_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(probes, "MAX_ARRAY_BYTES", 50_000)
    x = np.zeros((100, 28, 28), np.float32)  # 313,600 bytes, to the bound's 50,000
    np.save(tmp_path / "big.npy", x)
    np.savez_compressed(tmp_path / "bomb.npz", x=x)  # a few hundred bytes on disk, 313,728 unpacked
    assert (tmp_path / "bomb.npz").stat().st_size < 50_000
    with pytest.raises(JaxprovError, match=r"big.npy: 313,728 bytes, more than the 50,000 bytes"):
        probes.seeds(str(tmp_path / "big.npy"), SPEC, 2, KEY)
    with pytest.raises(JaxprovError, match=r"bomb.npz: array 'x' decompresses to 313,728 bytes, more than the 50,000"):
        probes.seeds(str(tmp_path / "bomb.npz"), SPEC, 2, KEY)
    small = probes.seeds("synthetic", SPEC, 4, KEY)
    small.save(tmp_path / "probes.npz")
    assert probes.Probes.load(tmp_path / "probes.npz").digest == small.digest
    big = probes.Probes(np.zeros((100, 28, 28, 1), np.float32), {"n": 100})
    big.save(tmp_path / "big-probes.npz")
    with pytest.raises(JaxprovError, match="big-probes.npz: array 'leaf0' decompresses to"):
        probes.Probes.load(tmp_path / "big-probes.npz")


def test_npz_seeds_with_nan_are_refused(tmp_path):
    x = np.full((3, 28, 28, 1), 0.5, np.float32)
    x[1, 0, 0, 0] = np.nan
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(3))
    with pytest.raises(JaxprovError, match="NaN or Inf"):
        probes.seeds(str(tmp_path / "s.npz"), SPEC, 2, KEY)


def test_unknown_and_missing_seed_sources(tmp_path):
    with pytest.raises(JaxprovError, match="unknown seed source 'mnst'"):
        probes.seeds("mnst", SPEC, 2, KEY)
    for missing in (tmp_path / "absent.npy", tmp_path / "absent" / "images"):
        with pytest.raises(JaxprovError, match="no such"):
            probes.seeds(str(missing), SPEC, 2, KEY)
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(JaxprovError, match="not a regular file"):
        probes.seeds(str(fifo), SPEC, 2, KEY)


TEXT_SPEC = jaxprov.InputSpec("text", "tokens", (16,), dtype="int32", raw_range=None, vocab_size=12)


def test_text_seeds_without_a_tokenizer_are_refused(tmp_path):
    (tmp_path / "sentences.txt").write_text("hello world\nworld hello\n")
    with pytest.raises(JaxprovError, match="text seeds need a tokenizer"):
        probes.seeds(str(tmp_path / "sentences.txt"), SPEC, 2, KEY)
    # Any named source for a text model: refused with the way to make text seeds, never cast to ids.
    for source in ("mnist", str(tmp_path / "sentences.txt")):
        with pytest.raises(JaxprovError, match="text model needs text seeds, which need its tokenizer"):
            probes.seeds(source, TEXT_SPEC, 2, KEY)
    with pytest.raises(JaxprovError, match="no usable tokenizer"):
        probes.text_seeds(tmp_path / "sentences.txt", tmp_path / "no-tokenizer", 2, KEY)
    synthetic = probes.seeds("synthetic", TEXT_SPEC, 3, KEY)  # random ids in the vocabulary
    ids = np.asarray(synthetic.inputs["input_ids"])
    assert ids.dtype == np.int32 and ids.shape == (3, 16) and 0 <= ids.min() and ids.max() < 12
    assert len(np.unique(ids)) > 2


def test_text_seeds_whose_tokens_are_all_unknown_are_refused(tmp_path):
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(tmp_path / "tok")
    (tmp_path / "en.txt").write_text("hello world\nworld hello\nhello hello\n")
    (tmp_path / "fr.txt").write_text("bonjour le monde\nle monde bonjour\nsalut\n")
    good = probes.text_seeds(tmp_path / "en.txt", tmp_path / "tok", 2, KEY, max_length=8)
    assert set(np.unique(good.inputs["input_ids"])) >= {5, 6}
    with pytest.raises(JaxprovError, match="100% of the tokens are unknown"):
        probes.text_seeds(tmp_path / "fr.txt", tmp_path / "tok", 2, KEY, max_length=8)


def test_nan_seeds_through_the_cli_are_one_line(stored, tmp_path, capsys):
    x = np.full((200, 28, 28), 0.5, np.float32)
    x[7, 3, 3] = np.nan
    np.save(tmp_path / "seeds.npy", x)
    err = _cli_error(["compare", stored["m0"], stored["m1"], "--method", "cka", "--seeds", tmp_path / "seeds.npy"],
                     capsys)
    assert "seeds.npy" in err and "NaN or Inf" in err


# -- reports ----------------------------------------------------------------------------------


def test_csv_report_escapes_spreadsheet_formulas(tmp_path):
    labels = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rcmd", "plain", "a-b"]
    matrix = np.linspace(-1, 1, len(labels) ** 2).reshape(len(labels), len(labels))
    files = report.write_report(tmp_path / "r", labels, {"cka": matrix})
    with open(files["cka.csv"], newline="") as fh:  # as a spreadsheet reads it: CR inside a cell kept
        rows = list(csv.reader(fh))
    assert rows[0][1:] == ["'" + label for label in labels[:5]] + ["'\\rcmd", "plain", "a-b"]
    assert [row[0] for row in rows[1:]] == rows[0][1:]
    assert float(rows[1][1]) == -1.0  # numbers are never escaped (a negative value stays a number)
    assert json.loads(files["json"].read_text())["labels"] == labels  # JSON keeps names as they are


def test_html_report_escapes_names_and_heatmaps_take_any_name(tmp_path):
    labels = ["<script>alert(1)</script>", "a$\\foo$", "x&y"]
    files = report.write_report(tmp_path / "r", labels, {"<b>m</b>": np.eye(3)}, title="<i>t</i>")
    page = files["html"].read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>m</b>" not in page and "<i>t</i>" not in page
    assert files["<b>m</b>.png"].read_bytes()[:4] == b"\x89PNG"


# -- scanned folders --------------------------------------------------------------------------


def test_scan_of_a_folder_with_hostile_entries_writes_the_report_and_exits_1(stored, tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    for name, path in stored.items():
        (folder / name).symlink_to(path, target_is_directory=True)
    os.mkfifo(folder / "pipe.pt")  # opening it would block forever
    (folder / "zero.pt").symlink_to("/dev/zero")  # reading it never ends
    (folder / "broken.pt").write_bytes(b"PK\x03\x04 not a zip")
    tampered = folder / "tampered"
    jaxprov.save_model(jaxprov.models.init("lenet", jax.random.PRNGKey(5)), tampered)
    meta = json.loads((tampered / "jaxprov.json").read_text())
    meta["arch"] = "resnet9000"
    (tampered / "jaxprov.json").write_text(json.dumps(meta))
    (folder / "m0.safetensors").write_bytes(b"")  # name clashes with the stored m0 (and is empty)
    out = tmp_path / "scan"
    run = _run_cli("scan", folder, "--out", out, "--method", "cka", "--seeds", "synthetic")
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    report_doc = json.loads((out / "report.json").read_text())
    assert sorted(report_doc["labels"]) == ["m0", "m1"]
    skipped = report_doc["metadata"]["skipped"]
    for entry in ("pipe.pt", "zero.pt", "broken.pt", "tampered", "m0.safetensors"):
        assert any(entry in line for line in skipped), (entry, skipped)
        assert entry in run.stderr
    assert (out / "similarity-cka.csv").stat().st_size > 0


# -- the Python API ---------------------------------------------------------------------------


def test_api_wrong_argument_types_raise_argument_errors(stored, tmp_path):
    model = jaxprov.load(stored["m0"])
    calls = [
        (lambda: jaxprov.load(None), "load: path must be a file or folder path"),
        (lambda: jaxprov.load(123), "not int 123"),
        (lambda: jaxprov.load(b"/tmp"), "not bytes"),
        (lambda: jaxprov.load(stored["m0"], arch=5), "load: arch must be a string"),
        (lambda: jaxprov.convert(None), "convert: src"),
        (lambda: jaxprov.convert(stored["m0"], out=3.5), "convert: out"),
        (lambda: jaxprov.convert(stored["m0"], arch=["lenet"]), "convert: arch"),
        (lambda: jaxprov.convert(stored["m0"], force="yes"), "convert: force must be True or False"),
        (lambda: jaxprov.Zoo(str(stored["m0"])), "Zoo: models must be a list of Models"),
        (lambda: jaxprov.Zoo(model), "Zoo: models must be a list of Models"),
        (lambda: jaxprov.Zoo([model, str(stored["m1"])]), "Zoo: models[1] is str"),
        (lambda: scan_models(str(tmp_path), tmp_path / "o"), "scan_models: models"),
        (lambda: scan_models([model], None), "scan_models: out"),
    ]
    for call, message in calls:
        with pytest.raises(ArgumentError) as err:
            call()
        assert isinstance(err.value, TypeError) and isinstance(err.value, jaxprov.ArgumentError)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_api_missing_path_is_a_checkpoint_error(tmp_path):
    with pytest.raises(jaxprov.CheckpointError, match="no such file or directory"):
        jaxprov.load(tmp_path / "absent.pt")
