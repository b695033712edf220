"""A trained Model DNA detector: its networks (g, h, the P(derived) head), what it was trained on,
and the one check that matters before use: the suspect's input space.

On disk a detector is a folder: `params/` (an orbax checkpoint of {"g", "h", "head"}) and
`dna.json` (architecture of g and h, output view, input space, training domains and architectures,
the training probes' digest, the training recipe's digest, versions, params sha256). The folder is
untrusted input: `load` checks the JSON field by field, the params against the tree its config
builds (declared shapes checked before anything is allocated) and against the recorded sha256
(`jaxprov.params_io`, shared with the model store), and answers anything wrong with one line. A detector is
addressed by a folder path or by the name of one shipped in `jaxprov/data/dna/`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import shutil
import uuid
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.atomic import atomic_write
from jaxprov.dna import views
from jaxprov.dna.classifier import Embedding, probability
from jaxprov.dna.contrastive import unit
from jaxprov.dna.encoder import ENCODERS, Encoder
from jaxprov import params_io
from jaxprov.errors import JaxprovError
from jaxprov.identity import params_digest
from jaxprov.model import InputSpec, as_inputs, n_items
from jaxprov.version import __version__

FORMAT, FORMAT_VERSION = "jaxprov-dna", 1
META_FILE, PARAMS_DIR = "dna.json", "params"
MAX_META_BYTES = 1 << 20
SHIPPED_DIR = "dna"  # jaxprov/data/dna/<name>
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
ENCODE_CHUNK = 512
MAX_INPUT_NUMBERS = 1 << 22  # numbers in one input of a detector's input_spec (the mlp encoder's first layer grows with them)


class DetectorError(JaxprovError):
    pass


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What builds a detector's networks: the output view, g (None: no encoder, DNA = the view) and
    h (None: no classifier, s = the mean cosine of the DNAs themselves)."""

    view: str = "logits"
    n_classes: int = 10
    k: int = 10
    encoder: str | None = "conv"
    encoder_hidden: int = 64
    embedding_hidden: int | None = 64
    embed: int = 32
    vocab_size: int | None = None  # the "tokens" encoder's vocabulary (text detectors)

    @property
    def width(self) -> int:
        return views.width(self.view, self.n_classes, self.k)

    def encoder_module(self) -> Encoder | None:
        return None if self.encoder is None else Encoder(self.width, self.encoder, self.encoder_hidden,
                                                         self.vocab_size)

    def embedding_module(self) -> Embedding | None:
        return None if self.embedding_hidden is None else Embedding(self.embedding_hidden, self.embed)

    def init(self, key: jax.Array, input_spec: InputSpec) -> dict:
        """Fresh params {"g", "h", "head"} (absent networks are empty dicts)."""
        kg, kh = jax.random.split(key)
        g, h = self.encoder_module(), self.embedding_module()
        return {"g": {} if g is None else dict(g.init(kg, input_spec.example(2))),
                "h": {} if h is None else dict(h.init(kh, jnp.zeros((2, self.width), jnp.float32))),
                "head": {"scale": jnp.asarray(math.log(math.expm1(5.0)), jnp.float32),
                         "bias": jnp.asarray(-2.5, jnp.float32)}}


@dataclasses.dataclass(frozen=True, eq=False)
class Detector:
    """A detector's architecture, params and record (`meta`: see the module docstring)."""

    arch: Architecture
    params: Mapping[str, Any]
    input_spec: InputSpec
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "dna"))

    @functools.cached_property
    def digest(self) -> str:
        """The params' sha256 plus the architecture: what signatures made with it depend on."""
        return params_digest({"params": dict(self.params), "arch": {k: np.asarray(str(v)) for k, v in
                                                                    dataclasses.asdict(self.arch).items()}})

    def encode(self, x) -> jax.Array:
        """g(x) [n, W] for probe inputs in the model's input space (zeros without an encoder)."""
        x = as_inputs(x, jnp)
        n = n_items(x)
        if self.arch.encoder is None:
            return jnp.zeros((n, self.arch.width), jnp.float32)
        apply = _encoder_apply(self.arch)
        return jnp.concatenate([apply(self.params["g"], jax.tree_util.tree_map(lambda a: a[i:i + ENCODE_CHUNK], x))
                                for i in range(0, n, ENCODE_CHUNK)], axis=0)

    def dna(self, g_x: jax.Array, logits: jax.Array) -> jax.Array:
        """DNA(M, x) = g(x) + view(M(x)): [n, W] from g(x) [n, W] and the model's outputs [n, C]."""
        return g_x + views.output_view(logits, self.arch.view, self.arch.n_classes, self.arch.k)

    def embed(self, dna: jax.Array) -> jax.Array:
        """Unit embeddings h(DNA) [..., E] (the unit DNA itself without a classifier)."""
        h = self.arch.embedding_module()
        return unit(dna) if h is None else h.apply(self.params["h"], dna)

    def probability(self, similarity):
        """P(derived) from a pair's similarity s (`jaxprov.dna.classifier`); NaN stays NaN."""
        return np.asarray(probability(self.params["head"], jnp.asarray(similarity, jnp.float32)), np.float64)

    def check_input(self, spec: InputSpec, model: str = "the model") -> None:
        """One-line refusal of a model whose input space is not the one this detector was trained on."""
        mine, theirs = _space(self.input_spec), _space(spec)
        if mine != theirs:
            domains = ", ".join(self.meta.get("domains", [])) or "unrecorded data"
            raise DetectorError(f"DNA detector {self.name!r} was trained on {_describe(self.input_spec)} inputs "
                                f"({domains}); {model} takes {_describe(spec)}: train a detector on that input "
                                "space with `jaxprov dna train`")

    def with_params(self, params: Mapping[str, Any], **meta) -> "Detector":
        return dataclasses.replace(self, params=params, meta={**self.meta, **meta})

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(self.meta),
                "architecture": dataclasses.asdict(self.arch), "input_spec": self.input_spec.to_json(),
                "params_sha256": params_digest(_host(self.params)),
                "versions": {"jaxprov": __version__, "jax": jax.__version__, **self.meta.get("versions", {}),
                             }}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the detector into `directory` (created; other files there, such as a training zoo or
        checkpoint, are left alone): params first, `dna.json` last, so a reader sees a whole detector
        or none (an interrupted save leaves no `dna.json`)."""
        target = Path(directory).absolute()
        params_io.check_path(target, error=DetectorError)
        if (target / PARAMS_DIR).exists() and not (target / META_FILE).is_file():
            raise DetectorError(f"{target}: holds a params/ folder that is not a DNA detector's; choose another --out")
        tmp = target / f".{PARAMS_DIR}.tmp-{uuid.uuid4().hex[:8]}"
        old = target / f".{PARAMS_DIR}.old-{uuid.uuid4().hex[:8]}"
        try:
            target.mkdir(parents=True, exist_ok=True)
            params_io.save(tmp, _host(self.params), target, DetectorError)
            (target / META_FILE).unlink(missing_ok=True)
            if (target / PARAMS_DIR).exists():
                (target / PARAMS_DIR).rename(old)
            tmp.rename(target / PARAMS_DIR)
            atomic_write(target / META_FILE, (json.dumps(self.to_json(), indent=1, default=_plain) + "\n").encode())
        except OSError as err:
            raise DetectorError(f"{target}: cannot write the DNA detector ({err.strerror or err})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return target


def _host(params):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), dict(params))


def _plain(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


@functools.lru_cache(maxsize=16)
def _encoder_apply(arch: Architecture):
    return jax.jit(arch.encoder_module().apply)


def _space(spec: InputSpec) -> tuple:
    rounded = lambda v: None if v is None else tuple(round(float(x), 6) for x in v)  # noqa: E731
    vocab = spec.vocab_size if spec.modality == "text" else None  # token ids mean nothing in another vocabulary
    return (spec.modality, spec.layout, tuple(spec.shape), rounded(spec.mean), rounded(spec.std), vocab)


def _describe(spec: InputSpec) -> str:
    if spec.modality == "text":
        return f"text ({spec.shape[0]} tokens of a {spec.vocab_size}-token vocabulary)"
    shape = "x".join(str(s) for s in spec.shape)
    norm = "" if spec.mean is None else f", normalised by mean {list(spec.mean)} std {list(spec.std)}"
    return f"{spec.modality} {shape}{norm}"


# ---------------------------------------------------------------------------------------------
# Loading (untrusted)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A detector folder from a path, or from the name of a detector shipped with jaxprov."""
    path = Path(name_or_path)
    if path.is_dir():
        return path.absolute()
    name = str(name_or_path)
    if NAME.fullmatch(name):
        shipped = resources.files("jaxprov").joinpath("data", SHIPPED_DIR, name)
        if shipped.is_dir():
            return Path(str(shipped))
    raise DetectorError(f"{name_or_path}: no DNA detector folder there and none shipped under that name "
                        f"(shipped: {', '.join(shipped_names()) or 'none'}); train one with `jaxprov dna train`")


def shipped_names() -> list[str]:
    try:
        root = resources.files("jaxprov").joinpath("data", SHIPPED_DIR)
        return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))
    except (FileNotFoundError, OSError):
        return []


def read_meta(directory: Path) -> dict:
    """`dna.json` of a detector folder, checked field by field (one line on anything wrong)."""
    bad = lambda why: DetectorError(f"{directory}: not a jaxprov DNA detector ({why}); "  # noqa: E731
                                    "train one with `jaxprov dna train`")
    file = directory / META_FILE
    try:
        if file.is_symlink() or not file.is_file():
            raise bad(f"no {META_FILE}")
        if file.stat().st_size > MAX_META_BYTES:
            raise bad(f"{META_FILE} is larger than {MAX_META_BYTES} bytes")
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"{META_FILE} cannot be read: {type(err).__name__}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad(f"{META_FILE} does not say format {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise bad(f"format version {meta.get('format_version')!r}; this jaxprov reads {FORMAT_VERSION}")
    arch = meta.get("architecture")
    fields = {f.name: f for f in dataclasses.fields(Architecture)}
    if not isinstance(arch, dict) or set(arch) - set(fields):
        raise bad("its architecture is missing or has unknown fields")
    checks = {"view": lambda v: v in views.VIEWS, "encoder": lambda v: v is None or v in ENCODERS,
              "embedding_hidden": lambda v: v is None or _small_int(v),
              "vocab_size": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                                    and 1 <= v <= 1 << 20)}
    for key, value in arch.items():
        ok = checks.get(key, _small_int)(value)
        if not ok:
            raise bad(f"architecture field {key} = {value!r} is not allowed")
    try:
        spec = InputSpec.from_json(meta["input_spec"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as err:
        raise bad(f"its input_spec is not valid ({type(err).__name__})") from None
    problem = _input_problem(Architecture(**arch), spec)
    if problem:
        raise bad(problem)
    if not isinstance(meta.get("params_sha256"), str):
        raise bad("no params_sha256")
    return meta


def _input_problem(arch: Architecture, spec: InputSpec) -> str | None:
    """Why `arch`'s networks cannot be built on inputs of `spec` (None when they can): the input
    spec's fields checked against the encoder that reads it, so that `load` builds the expected
    params tree without an error."""
    shape = spec.shape
    if not shape or any(s < 1 for s in shape) or math.prod(shape) > MAX_INPUT_NUMBERS:
        return f"its input_spec shape {list(shape)} is not sizes >= 1 of at most {MAX_INPUT_NUMBERS} numbers"
    if spec.modality == "text" and not (spec.vocab_size is None or (isinstance(spec.vocab_size, int)
                                                                    and not isinstance(spec.vocab_size, bool)
                                                                    and 1 <= spec.vocab_size <= 1 << 20)):
        return f"its input_spec vocab_size {spec.vocab_size!r} is not a size from 1 to {1 << 20}"
    if arch.encoder == "tokens" and (spec.modality != "text" or len(shape) != 1 or arch.vocab_size is None):
        return "its tokens encoder needs text inputs of one axis and an architecture vocab_size"
    if arch.encoder in ("conv", "mlp") and spec.modality == "text":
        return f"its {arch.encoder} encoder reads numbers, and its input_spec says text"
    if arch.encoder == "conv" and len(shape) != 3:
        return f"its conv encoder reads images of 3 axes (height, width, channels), not shape {list(shape)}"
    if spec.modality == "image" and (spec.mean is None) != (spec.std is None):
        return "its input_spec gives only one of mean and std"
    if spec.modality == "image" and spec.mean is not None:
        for name, values in (("mean", spec.mean), ("std", spec.std)):
            if len(values) not in (1, shape[-1]) or not all(math.isfinite(v) for v in values):
                return f"its input_spec {name} is not 1 or {shape[-1]} finite numbers (one per channel)"
        if 0.0 in spec.std:
            return "its input_spec std has a zero"
    return None


def _small_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096


def load(name_or_path: str | os.PathLike) -> Detector:
    """Load a detector (a folder, or a shipped name), checking it as untrusted input."""
    directory = resolve(name_or_path)
    meta = read_meta(directory)
    arch = Architecture(**meta["architecture"])
    spec = InputSpec.from_json(meta["input_spec"])
    expected = jax.eval_shape(lambda: arch.init(jax.random.PRNGKey(0), spec))  # read_meta checked they fit
    params = params_io.restore(directory / PARAMS_DIR, expected, meta["params_sha256"], shown=directory,
                               what="the detector's params", fits="its architecture",
                               advice="train it again with `jaxprov dna train`", error=DetectorError)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    record = {k: v for k, v in meta.items() if k not in ("format", "format_version", "architecture", "input_spec",
                                                           "params_sha256")}
    return Detector(arch, params, spec, {**record, "path": str(directory)})


@functools.lru_cache(maxsize=16)
def cached(name_or_path: str) -> Detector:
    """`load`, once per process and name: methods read their detector at every trace."""
    return load(name_or_path)
