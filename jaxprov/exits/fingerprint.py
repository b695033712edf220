"""The fingerprint file: crafted samples, the stop exit each is expected at, the owner's answers and timing
profile, the threshold and the recipe, hashed like every jaxprov artifact (an .npz whose `__meta__`
JSON holds the sha256 `digest` over the metadata and every array).

Reading one treats it as untrusted: no pickles (`allow_pickle=False`), a size limit, exactly the
expected arrays with consistent shapes and finite values, and the digest recomputed; any failure is
one line naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxprov.atomic import atomic_write
from jaxprov.errors import JaxprovError

FORMAT = "jaxprov-exits-fingerprint"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 1 << 30
ARRAYS = ("samples", "stops", "labels")


@dataclasses.dataclass(frozen=True, eq=False)
class Fingerprint:
    """samples [n, ...] float32 in the owner's input space; stops [n] the expected stop exits; labels
    [n] the owner's answers; meta: num_exits, threshold, input_shape, owner {name, arch,
    params_sha256}, recipe (craft settings, seeds, key), profile (the owner's LatencyProfile),
    calibration (null match rates, or None), versions."""

    samples: np.ndarray
    stops: np.ndarray
    labels: np.ndarray
    meta: dict

    @property
    def n(self) -> int:
        return int(self.stops.shape[0])

    @property
    def num_exits(self) -> int:
        return int(self.meta["num_exits"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def digest(self) -> str:
        return _digest(self.meta, self.samples, self.stops, self.labels)

    def replace(self, **changes) -> "Fingerprint":
        return dataclasses.replace(self, **changes)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (a reader sees the old file or the new one)."""
        path = Path(path)
        buffer = io.BytesIO()
        header = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "meta": self.meta,
                             "digest": self.digest})
        np.savez(buffer, __meta__=np.asarray(header), samples=self.samples.astype(np.float32),
                 stops=self.stops.astype(np.int32), labels=self.labels.astype(np.int32))
        atomic_write(path, buffer.getvalue())
        return path


def load(path: str | os.PathLike) -> Fingerprint:
    """Read and check a fingerprint file (see the module docstring); JaxprovError with one line otherwise."""
    path = Path(path)
    where = f"fingerprint {path}"
    try:
        if not path.is_file():
            raise JaxprovError(f"{where}: no such file (make one with `jaxprov fingerprint exits make`)")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise JaxprovError(f"{where}: larger than {MAX_FILE_BYTES >> 20} MiB; not a fingerprint file")
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if names != {"__meta__", *ARRAYS}:
                raise JaxprovError(f"{where}: holds {sorted(names)}, expected __meta__, {', '.join(ARRAYS)}")
            header = json.loads(str(data["__meta__"]))
            samples, stops, labels = (np.asarray(data[k]) for k in ARRAYS)
    except JaxprovError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, UnicodeDecodeError) as err:
        raise JaxprovError(f"{where}: not a readable fingerprint file ({type(err).__name__}: {err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise JaxprovError(f"{where}: not a jaxprov exits fingerprint (no {FORMAT!r} header)")
    if header.get("format_version") != FORMAT_VERSION:
        raise JaxprovError(f"{where}: format version {header.get('format_version')!r}; this jaxprov reads "
                           f"{FORMAT_VERSION}")
    meta = header.get("meta")
    problems = _problems(meta, samples, stops, labels)
    if problems:
        raise JaxprovError(f"{where}: {'; '.join(problems)}")
    if _digest(meta, samples, stops, labels) != header.get("digest"):
        raise JaxprovError(f"{where}: its digest does not match its contents: the file was changed after it "
                           "was written; use the original")
    return Fingerprint(samples.astype(np.float32), stops.astype(np.int32), labels.astype(np.int32), meta)


def _problems(meta, samples, stops, labels) -> list[str]:
    if not isinstance(meta, dict):
        return ["its metadata is not an object"]
    k, q, shape = meta.get("num_exits"), meta.get("threshold"), meta.get("input_shape")
    problems = []
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        problems.append(f"num_exits {k!r} is not an integer >= 2")
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q <= 1:
        problems.append(f"threshold {q!r} is not in (0, 1]")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
        problems.append(f"input_shape {shape!r} is not a list of positive integers")
    if problems:
        return problems
    n = stops.shape[0] if stops.ndim == 1 else -1
    if n < 1 or samples.shape != (n, *shape) or labels.shape != (n,):
        problems.append(f"arrays samples {samples.shape}, stops {stops.shape}, labels {labels.shape} do not fit "
                        f"{n} samples of shape {tuple(shape)}")
    elif samples.dtype.kind != "f" or stops.dtype.kind not in "iu" or labels.dtype.kind not in "iu":
        problems.append("samples must be floats and stops/labels integers")
    elif not np.all(np.isfinite(samples)):
        problems.append("samples hold NaN or infinite values")
    elif stops.min() < 0 or stops.max() >= k:
        problems.append(f"stops outside 0..{k - 1}")
    return problems


def _digest(meta: dict, *arrays: np.ndarray) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, a in zip(ARRAYS, arrays):
        a = np.ascontiguousarray(a.astype(np.float32 if name == "samples" else np.int32))
        h.update(f"{name}|{a.dtype}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
