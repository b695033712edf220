"""Any `torch.nn.Module` as a jaxprov Model, traced into JAX by torchax (the generic converter).

The hand-written families (jaxprov/models/) stay the first choice where they fit: torch-free and
faster to load. Everything else (a user's own module, timm, Hugging Face model types without a
family, `torch.export` archives: converters/torch_sources.py) comes through here.

A generic model's `module` is a `TorchFunction`: the torch module's structure (its weights are
never used), traced on demand by torchax into a pure JAX function of a params tree
`{"params": trainable tensors, "batch_stats": buffers}`, nested by the state-dict names
("layer1.0.bn1.running_mean" -> params["batch_stats"]["layer1"]["0"]["bn1"]["running_mean"]).
Two routes, as measured in issue 10:
  - "extract_jax": torch's own forward run under torchax's tensor subclass
    (`torch.func.functional_call`); traces what export cannot (GPT-2), takes any inputs the
    forward takes (text models' `inputs_embeds`), and costs well under a second per architecture;
  - "export": `torch.export.export` (dynamic batch axis), then torchax's interpreter of the graph;
    it also traces modules that create tensors inside `forward()` without `device=`, but costs
    7-25 s per architecture on a 2-core CPU (export plus two decomposition passes), and its
    graph takes only the inputs it was exported with.
"auto" tries extract_jax first and falls back to export (issue 10 suggested the other order;
both are parity-checked, so the order only decides the cost). A `.pt2` archive is an exported
graph already and runs as it is. Conversion checks parity against torch's own forward on an
example input and refuses above `tolerance` with the measured error.

torchax rewrites torch's ops as jax.numpy with torch's broadcasting and type promotion, so the
traced functions run under locally scoped `jax.numpy_rank_promotion("allow")` and
`jax.numpy_dtype_promotion("standard")`: jaxprov's own code (and its tests) keep strict promotion.
Importing torchax sets process-wide state (an environment variable, torch's MHA fast path, jax
client options), so it is imported here, inside functions, and nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
from typing import Any, Callable, Mapping

import numpy as np

from jaxprov.errors import ArchitectureError, ConversionError, JaxprovError
from jaxprov.model import InputSpec, Model

GENERIC_VERSION = "1"
TORCHAX_PIN = "0.0.14.dev20261026"  # every stable torchax (0.0.10-0.0.13) fails to import with torch >= 2.13
DEFAULT_TOLERANCE = 1e-4
ROUTES = ("extract_jax", "export")  # the order "auto" tries them in (docs/architectures.md: why)
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
INSTALL_HINT = f"pip install 'jaxprov[torch]' (torch, timm and torchax=={TORCHAX_PIN})"


def torchax_modules():
    """(torch, torchax, torchax.export), or one line saying what to install."""
    try:
        import torch
        import torchax
        import torchax.export
    except ImportError as err:
        raise JaxprovError(f"the generic torch converter needs torch and torchax ({err.name or err} is missing); "
                           f"{INSTALL_HINT}") from None
    return torch, torchax, torchax.export


@contextlib.contextmanager
def _torch_semantics():
    """torchax's jaxprs broadcast and promote as torch does; strict promotion stays on outside.

    torch's int64 tensors (token positions, indices) become int32 under jax's default x32; jax
    warns at each such cast. The values (ids, positions, indices of a model that fits in memory)
    are far below 2**31 and the conversion's parity check would catch any that are not, so that
    one warning is silenced here: a folder scan reports warnings as problems of the entry."""
    import warnings

    import jax

    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Explicitly requested dtype int64 requested in", category=UserWarning)
        yield


def nest(flat: Mapping[str, Any]) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}} (state-dict names as a plain nested dict)."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict:
    """The inverse of `nest`."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@dataclasses.dataclass(frozen=True)
class Taps:
    """Which intermediates `features` returns besides "output".

    `pre_logits` is the input of the named submodule (default: the last `nn.Linear` the forward
    calls, i.e. the representation a classifier head reads); `outputs` maps feature names to
    submodules whose outputs are returned as they are. For outputs that are token sequences
    ("last_hidden_state") pre_logits is the masked mean of the tokens instead (as for BERT)."""

    pre_logits: str | None = None
    outputs: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        return {"pre_logits": self.pre_logits, "outputs": [list(p) for p in self.outputs]}

    @classmethod
    def from_json(cls, data: Mapping) -> "Taps":
        return cls(data.get("pre_logits"), tuple((str(a), str(b)) for a, b in data.get("outputs") or ()))


@dataclasses.dataclass(frozen=True, eq=False)
class TorchFunction:
    """The `module` of a generic Model: `apply(params, x) -> (output, features)`, pure and traceable.

    Hashed by identity; `function_for` hands every model of one arch key the same object, so
    `jax.jit` compiles once per architecture (Model.apply is cached per module object)."""

    arch: str
    torch_module: Any  # eval-mode nn.Module: structure only, weights come from params
    route: str
    modality: str
    output_key: str | None  # "logits" / "last_hidden_state" of a Hugging Face output, else None
    taps: Taps
    param_names: tuple[str, ...]
    buffer_names: tuple[str, ...]
    text_keys: tuple[str, ...] = ()  # which of TEXT_KEYS the module's forward takes
    embedding_name: str | None = None  # state-dict name of the input token embedding table
    exported: Any = None  # route "export": (jax function of (states, inputs), state names, taps order)

    def apply(self, params, x):
        import jax
        import jax.numpy as jnp

        args, kwargs, mask = self._inputs(jax.tree_util.tree_map(jnp.asarray, x))
        with _torch_semantics():
            flat = {k: jnp.asarray(v) for k, v in {**flatten(params.get("params", {})),
                                                    **flatten(params.get("batch_stats", {}))}.items()}
            if self.route == "export":
                out, feats = self._run_exported(flat, args)
            else:
                out, feats = self._run_torch(flat, args, kwargs)
            out, feats = self._finish(out, feats, mask)
        return out, feats

    def embed_tokens(self, params, input_ids):
        """The embeddings hook (`jaxprov.model.ModelFns.embed`): token ids -> the word embeddings
        that `apply` takes as `inputs_embeds`."""
        import jax.numpy as jnp

        if self.embedding_name is None:
            raise JaxprovError(f"{self.arch}: not a text model with an input embedding table")
        table = flatten(params["params"])[self.embedding_name]
        return jnp.take(table, input_ids, axis=0)

    # -- inputs and outputs at the jaxprov boundary (NHWC images, text dicts) ---------------------

    def _inputs(self, x):
        import jax.numpy as jnp

        if self.modality == "text":
            if not isinstance(x, Mapping) or ("input_ids" in x) == ("inputs_embeds" in x):
                raise TypeError(f"{self.arch} takes a dict with exactly one of 'input_ids' [batch, seq] or "
                                "'inputs_embeds' [batch, seq, hidden], plus optional 'attention_mask', 'token_type_ids'")
            kwargs = {k: x[k] for k in self.text_keys if k in x}
            if "inputs_embeds" in x:
                kwargs.pop("input_ids", None)
                kwargs["inputs_embeds"] = x["inputs_embeds"]
            first = x.get("input_ids", x.get("inputs_embeds"))
            mask = x.get("attention_mask")
            mask = jnp.ones(first.shape[:2], jnp.int32) if mask is None else mask
            return (), kwargs, mask
        if self.modality == "image":
            return (jnp.transpose(x, (0, 3, 1, 2)),), {}, None  # NHWC at the boundary, NCHW for torch
        return (x,), {}, None

    def _finish(self, out, feats, mask):
        import jax.numpy as jnp

        from jaxprov.models.bert import mean_pool

        if "pre_logits" not in feats:
            if out.ndim == 3 and mask is not None:
                feats["pre_logits"] = mean_pool(out, mask)
            elif out.ndim == 3:
                feats["pre_logits"] = jnp.mean(out, axis=1)
            elif out.ndim == 4:  # NCHW feature maps of a convolutional base model
                feats["pre_logits"] = jnp.mean(out, axis=(2, 3))
            else:
                feats["pre_logits"] = out.reshape(out.shape[0], -1)
        return out, feats

    def _select(self, out):
        if self.output_key is not None:
            return getattr(out, self.output_key) if hasattr(out, self.output_key) else out[self.output_key]
        if isinstance(out, (tuple, list)):
            return out[0]
        return out

    # -- the two routes --------------------------------------------------------------------------

    def _run_torch(self, flat, args, kwargs):
        torch, torchax, _ = torchax_modules()
        env = torchax.default_env()
        tensors, args, kwargs = env.j2t_iso((flat, args, kwargs))
        captured: dict = {}
        handles = _hook(self.torch_module, self.taps, captured)
        try:
            with env:
                out = torch.func.functional_call(self.torch_module, tensors, args, kwargs, tie_weights=True,
                                                 strict=False)
                out = self._select(out)
        finally:
            for handle in handles:
                handle.remove()
        return env.t2j_iso(out), env.t2j_iso(captured)

    def _run_exported(self, flat, args):
        func, names, constants, tap_names = self.exported
        states = [flat[name] for name in names] + list(constants)
        res = func(states, args)
        return res[0], dict(zip(tap_names, res[1:]))

    def abstract_params(self):
        """The params tree this function takes, as ShapeDtypeStructs (the store checks loads against it)."""
        import jax

        named = {**dict(self.torch_module.named_parameters()), **dict(self.torch_module.named_buffers())}
        leaf = lambda n: jax.ShapeDtypeStruct(tuple(named[n].shape), _jax_dtype(named[n].dtype))  # noqa: E731
        return {"params": nest({n: leaf(n) for n in self.param_names}),
                "batch_stats": nest({n: leaf(n) for n in self.buffer_names})}


def _jax_dtype(torch_dtype) -> np.dtype:
    import torch

    if torch_dtype.is_floating_point:
        return np.dtype(np.float32)
    if torch_dtype == torch.bool:
        return np.dtype(np.bool_)
    return np.dtype(np.int32)  # jax without x64: int64 buffers (num_batches_tracked, position_ids) are int32


def _hook(module, taps: Taps, captured: dict) -> list:
    """Forward hooks that record the tapped intermediates of one call into `captured`."""
    handles = []
    submodules = dict(module.named_modules())
    if taps.pre_logits is not None:
        def grab_input(_, inputs, __):
            captured["pre_logits"] = inputs[0]
        handles.append(submodules[taps.pre_logits].register_forward_hook(grab_input))
    for name, path in taps.outputs:
        def grab_output(_, __, output, name=name):
            captured[name] = output[0] if isinstance(output, (tuple, list)) else output
        handles.append(submodules[path].register_forward_hook(grab_output))
    return handles


def _forward_hooked(module, handles: list, args, kwargs) -> None:
    """One no-grad forward of `module` with the forward hooks `handles`, removed afterwards."""
    import torch

    try:
        with torch.no_grad():
            module(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


# -- building a TorchFunction --------------------------------------------------------------------

_FUNCTIONS: dict[str, TorchFunction] = {}


def _arch_key(label: str, module, recipe: Mapping, spec: InputSpec, output_key, taps: Taps) -> str:
    """`torch:LABEL@DIGEST`: the digest covers the class, how it is built, every state-dict name,
    shape and dtype, the input, the output and the taps: equal keys mean one traced function."""
    entries = sorted((n, tuple(t.shape), str(t.dtype)) for n, t in
                     list(module.state_dict().items()) + list(module.named_buffers()))
    blob = json.dumps({"class": f"{type(module).__module__}.{type(module).__qualname__}", "recipe": recipe,
                       "state": entries, "modality": spec.modality, "shape": spec.shape, "output": output_key,
                       "taps": taps.to_json(), "version": GENERIC_VERSION},
                      sort_keys=True, default=str)
    return f"torch:{label}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _last_linear(module, example_args, example_kwargs) -> str | None:
    """The last `nn.Linear` a forward calls (its input is what a classifier head reads)."""
    import torch

    names = {id(m): n for n, m in module.named_modules()}
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, *_: order.append(names[id(mod)]))
               for m in module.modules() if isinstance(m, torch.nn.Linear)]
    _forward_hooked(module, handles, example_args, example_kwargs)
    return order[-1] if order else None


def _example(spec: InputSpec, text_seq: int = 8):
    """A deterministic example batch for tracing and the parity check (text: a padded sequence)."""
    import jax
    import jax.numpy as jnp

    if spec.modality != "text":
        return spec.example(2, jax.random.PRNGKey(0))
    seq = min(text_seq, spec.shape[0])
    ids = jax.random.randint(jax.random.PRNGKey(0), (2, seq), 0, spec.vocab_size or 100).astype(jnp.int32)
    mask = jnp.ones((2, seq), jnp.int32).at[1, seq - 2:].set(0)  # a padded row: masking must match too
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": jnp.zeros_like(mask)}


def _torch_inputs(spec: InputSpec, x, text_keys):
    import torch

    if spec.modality == "text":
        return (), {k: torch.from_numpy(np.array(x[k], np.int64)) for k in text_keys if k in x}
    array = np.array(x, np.float32)
    if spec.modality == "image":
        array = array.transpose(0, 3, 1, 2)
    return (torch.from_numpy(np.ascontiguousarray(array)),), {}


def _export(torch_module, taps: Taps, output_key, example_args):
    """The "export" route: torch.export with a dynamic batch axis, then torchax's graph interpreter."""
    torch, _, texport = torchax_modules()
    tap_names = (["pre_logits"] if taps.pre_logits else []) + [name for name, _ in taps.outputs]

    class Tapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            captured: dict = {}
            handles = _hook(self.inner, taps, captured)
            try:
                out = self.inner(x)
            finally:
                for handle in handles:
                    handle.remove()
            if output_key is not None:
                out = getattr(out, output_key)
            elif isinstance(out, (tuple, list)):
                out = out[0]
            return (out, *[captured[n] for n in tap_names])

    batch = torch.export.Dim("batch", min=1)
    # strict=False: torchax renames torch's privateuse1 backend to "jax", which dynamo (strict) trips on.
    program = torch.export.export(Tapped(torch_module), example_args, dynamic_shapes=({0: batch},), strict=False)
    return exported_function(program, tap_names)


def exported_function(program, tap_names=()):
    """(jax function of (states, inputs), state names, lifted constants, tap names) for an
    ExportedProgram, through torchax's graph interpreter. The dynamic batch size (`sym_size`) is
    read from the jax array's shape, which torchax's interpreter does not do by itself."""
    torch, torchax, texport = torchax_modules()
    from torchax import decompositions

    env = torchax.default_env()  # building the environment registers torchax's jax lowerings
    program = program.run_decompositions().run_decompositions(decompositions.DECOMPOSITIONS)
    signature = program.graph_signature
    names = list(signature.parameters) + list(signature.buffers)
    constants = [program.constants[n] for n in getattr(signature, "lifted_tensor_constants", ())]
    constants = tuple(env.t2j_copy(constants)) if constants else ()
    n_mutations = len(signature.buffers_to_mutate)
    graph = program.graph_module

    class Interpreter(texport.JaxInterpreter):
        def call_function(self, target, args, kwargs):
            if target is torch.ops.aten.sym_size.int:
                return args[0].shape[args[1]]
            return super().call_function(target, args, kwargs)

    def func(states, inputs):
        return Interpreter(graph).run(*states, *inputs, enable_io_processing=False)[n_mutations:]

    return func, tuple(n.removeprefix("inner.") for n in names), constants, tuple(tap_names)


def function_for(torch_module, spec: InputSpec, *, label: str, recipe: Mapping, output_key: str | None = None,
                 taps: Taps | None = None, route: str = "auto", text_keys: tuple[str, ...] = (),
                 embedding_name: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 program=None) -> tuple[TorchFunction, dict]:
    """A parity-checked TorchFunction for `torch_module` (in eval mode) and how it was checked.

    Tries the routes in order ("auto": extract_jax, then export) and returns the first whose output (and pre_logits) match torch's own forward within
    `tolerance` (max |jax - torch| / max(1, max |torch|)); none: ConversionError with each error.
    `program`: an ExportedProgram whose `module()` is `torch_module` (a .pt2 archive's), run as it is
    instead of exported again."""
    torch, _, _ = torchax_modules()
    try:
        torch_module = torch_module.eval()
    except NotImplementedError:  # an exported program's module() is always in eval form
        pass
    if route not in ("auto", *ROUTES):
        raise ArchitectureError(f"route must be auto, export or extract_jax, not {route!r}")
    routes = ROUTES if route == "auto" else (route,)
    example = _example(spec)
    args, kwargs = _torch_inputs(spec, example, text_keys)
    if taps is None:
        try:
            taps = Taps(pre_logits=None if output_key == "last_hidden_state"
                        else _last_linear(torch_module, args, kwargs))
        except Exception as err:  # noqa: BLE001 - the user's module failed in plain torch
            raise ConversionError(f"{label}: the module's own forward fails on an example input of shape "
                                  f"{_shape_text(example)} ({type(err).__name__}: {_first_line(err)}); "
                                  "check the input spec (--input-shape) and the module") from None
    submodules = dict(torch_module.named_modules())
    for path in [taps.pre_logits] + [p for _, p in taps.outputs]:
        if path is not None and path not in submodules:
            raise ConversionError(f"{label}: no submodule {path!r} to tap; submodules: "
                                  f"{', '.join(list(submodules)[1:8])}, ...")
    param_names = tuple(n for n, _ in torch_module.named_parameters())
    buffer_names = tuple(n for n, _ in torch_module.named_buffers())
    params = params_from_module(torch_module, param_names, buffer_names)
    with torch.no_grad():
        reference = torch_module(*args, **kwargs)
    # The route is not part of the key: both compute torch's forward (checked), and a stored
    # model records the route it was converted with.
    arch = _arch_key(label, torch_module, recipe, spec, output_key, taps)
    if arch in _FUNCTIONS:
        return _FUNCTIONS[arch], {"route": _FUNCTIONS[arch].route, "parity": None}
    failures = []
    for attempt in routes:
        fn = TorchFunction(arch, torch_module, attempt, spec.modality, output_key, taps, param_names,
                           buffer_names, tuple(text_keys), embedding_name)
        try:
            if attempt == "export":
                exported = (exported_function(program) if program is not None
                            else _export(torch_module, taps, output_key, args))
                fn = dataclasses.replace(fn, exported=exported)
            error = _parity(fn, params, example, reference, torch_module, taps, args, kwargs)
        except Exception as err:  # noqa: BLE001 - torch.export / torchax raise many types for what they cannot trace
            failures.append(f"{attempt}: {type(err).__name__}: {_first_line(err)}")
            continue
        if error > tolerance:
            failures.append(f"{attempt}: outputs differ from torch's by {error:.2e} (tolerance {tolerance:g})")
            continue
        _FUNCTIONS[arch] = fn
        return fn, {"route": attempt, "parity": error}
    raise ConversionError(f"{label}: torchax could not trace the module to match torch's forward "
                          f"({'; '.join(failures)}); see docs/architectures.md for what cannot trace")


def _parity(fn: TorchFunction, params, example, reference, torch_module, taps, args, kwargs) -> float:
    """max relative difference of the output and every tapped feature against torch's."""
    import jax

    with jax.default_matmul_precision("highest"):
        out, feats = jax.jit(fn.apply)(params, example)  # one compile, not one per op
    ref = fn._select(reference)
    errors = [_rel(out, ref.detach().numpy())]
    if taps.pre_logits is not None or taps.outputs:
        captured: dict = {}
        _forward_hooked(torch_module, _hook(torch_module, taps, captured), args, kwargs)
        errors += [_rel(feats[name], value.detach().numpy()) for name, value in captured.items()]
    return max(errors)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b), initial=0.0) / max(1.0, float(np.max(np.abs(b), initial=0.0))))


def _shape_text(x) -> str:
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {tuple(np.shape(v))}" for k, v in x.items()) + "}"
    return str(tuple(np.shape(x)))


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def params_from_module(torch_module, param_names, buffer_names) -> dict:
    """The module's own tensors as a jaxprov params tree."""
    named = {**dict(torch_module.named_parameters()), **dict(torch_module.named_buffers())}
    return params_from_arrays({n: named[n].detach().cpu().numpy() for n in (*param_names, *buffer_names)},
                              param_names, buffer_names)


def params_from_arrays(arrays: Mapping[str, np.ndarray], param_names, buffer_names) -> dict:
    def cast(a):
        a = np.asarray(a)
        if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
            return np.asarray(a, np.float32)
        if a.dtype == np.bool_:
            return a
        return a.astype(np.int32)

    return {"params": nest({n: cast(arrays[n]) for n in param_names}),
            "batch_stats": nest({n: cast(arrays[n]) for n in buffer_names})}


def state_dict_params(fn: TorchFunction, state_dict: Mapping[str, np.ndarray], source: str) -> dict:
    """The params tree from a state dict read by converters.readers, every problem listed at once.

    Non-persistent buffers (absent from any state dict) come from the module as built; tied
    parameters (GPT-2's lm_head is wte) are read once, under the name torch deduplicates to."""
    module_state = fn.torch_module.state_dict()
    named = {**dict(fn.torch_module.named_parameters()), **dict(fn.torch_module.named_buffers())}
    problems = [f"missing {k}" for k in module_state if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in module_state]
    problems += [f"{k} has shape {tuple(np.shape(state_dict[k]))}, the module's is {tuple(v.shape)}"
                 for k, v in module_state.items() if k in state_dict and tuple(np.shape(state_dict[k])) != tuple(v.shape)]
    if problems:
        raise ConversionError(f"{source}: the weights do not fit {fn.arch.split('@')[0]} ({len(problems)} problems)",
                              problems)
    arrays = {n: state_dict[n] if n in state_dict else named[n].detach().cpu().numpy()
              for n in (*fn.param_names, *fn.buffer_names)}
    return params_from_arrays(arrays, fn.param_names, fn.buffer_names)


def build_model(fn: TorchFunction, params, spec: InputSpec, *, name: str, output_kind: str,
                meta: Mapping) -> Model:
    return Model(name=name, arch=fn.arch, module=fn, params=params, input_spec=spec, output_kind=output_kind,
                 meta=dict(meta))


def convert_module(torch_module, spec: InputSpec, *, label: str, recipe: Mapping, name: str | None = None,
                   state_dict: Mapping[str, np.ndarray] | None = None, source: str = "module",
                   output_key: str | None = None, output_kind: str = "logits", taps: Taps | None = None,
                   route: str = "auto", text_keys: tuple[str, ...] = (), embedding_name: str | None = None,
                   tolerance: float = DEFAULT_TOLERANCE, meta: Mapping | None = None, program=None) -> Model:
    """The shared path of every generic source: trace and check, then fill the params.

    `recipe` is how the module is rebuilt when a stored copy is loaded (converters/torch_sources.py
    records and replays it); parity is checked with the module's own weights, or with `state_dict`
    loaded into the module first when one is given."""
    torch, torchax, _ = torchax_modules()
    if state_dict is not None:
        expected = torch_module.state_dict()
        problems = [f"missing {k}" for k in expected if k not in state_dict]
        problems += [f"unexpected {k}" for k in state_dict if k not in expected]
        problems += [f"{k} has shape {tuple(np.shape(state_dict[k]))}, the module's is {tuple(v.shape)}"
                     for k, v in expected.items() if k in state_dict and tuple(np.shape(state_dict[k])) != tuple(v.shape)]
        if problems:
            raise ConversionError(f"{source}: the weights do not fit {label} ({len(problems)} problems)", problems)
        torch_module.load_state_dict({k: torch.from_numpy(np.array(v, np.float32) if np.asarray(v).dtype.name
                                      == "bfloat16" else np.array(v)) for k, v in state_dict.items()})
    fn, check = function_for(torch_module, spec, label=label, recipe=recipe, output_key=output_key, taps=taps,
                             route=route, text_keys=text_keys, embedding_name=embedding_name, tolerance=tolerance,
                             program=program)
    params = (state_dict_params(fn, state_dict, source) if state_dict is not None
              else params_from_module(torch_module, fn.param_names, fn.buffer_names))
    if check["parity"] is None:  # an arch traced earlier: check these weights too
        args, kwargs = _torch_inputs(spec, _example(spec), text_keys)
        with torch.no_grad():
            reference = torch_module(*args, **kwargs)
        error = _parity(fn, params, _example(spec), reference, torch_module, fn.taps, args, kwargs)
        if error > tolerance:
            raise ConversionError(f"{label}: outputs differ from torch's by {error:.2e} (tolerance {tolerance:g})")
        check = {**check, "parity": error}
    generic = {"label": label, "recipe": dict(recipe), "route": check["route"], "output_key": output_key,
               "taps": fn.taps.to_json(), "text_keys": list(text_keys), "embedding_name": embedding_name,
               "parity": check["parity"], "versions": {"torch": torch.__version__, "torchax": torchax.__version__},
               "loading_needs": INSTALL_HINT}
    meta = {**dict(meta or {}), "generic": generic,
            "converter": {"version": GENERIC_VERSION, "source_family": f"torch-generic:{recipe.get('kind', 'module')}",
                          "source_dtypes": sorted({str(np.asarray(v).dtype) for v in (state_dict or {}).values()})
                          or ["float32"]}}
    return build_model(fn, params, spec, name=name or label, output_kind=output_kind, meta=meta)


def full_kwargs(cls, kwargs: Mapping[str, Any] | None) -> dict:
    """`kwargs` with the constructor's defaults filled in, so that `{}` and `{"width": 8}` (the
    default) record the same recipe and give the same arch key. JSON values only."""
    kwargs = dict(kwargs or {})
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise ArchitectureError(f"{cls.__qualname__}: module kwargs must be JSON values") from None
    try:
        bound = inspect.signature(cls).bind_partial(**kwargs)
        bound.apply_defaults()
        full = dict(bound.arguments)
        json.dumps(full)
        return full if all(inspect.Parameter.VAR_KEYWORD != p.kind for p in
                           inspect.signature(cls).parameters.values()) else kwargs
    except (TypeError, ValueError):  # unbindable (the constructor says why) or non-JSON defaults
        return kwargs


def from_torch(module, input_spec: InputSpec, *, name: str | None = None, state_dict=None,
               module_kwargs: Mapping[str, Any] | None = None, output_kind: str = "logits",
               pre_logits: str | None = None,
               taps: Mapping[str, str] | None = None, route: str = "auto",
               tolerance: float = DEFAULT_TOLERANCE) -> Model:
    """A jaxprov Model from any `torch.nn.Module` (the API of `jaxprov.from_torch`).

    Args:
      module: the module, built; its weights are used unless `state_dict` is given.
      input_spec: what it takes, at jaxprov's boundary (images NHWC; torch sees NCHW).
      name: the model's name (default: the class name).
      state_dict: weights to load first ({name: array}, e.g. from converters.readers).
      module_kwargs: the JSON keyword arguments that built `module`, recorded so that a stored copy
        can be rebuilt (`type(module)(**module_kwargs)` must build the same structure).
      output_kind: "logits" or "embedding" (what the forward returns).
      pre_logits: the submodule whose input is the penultimate feature (default: the last Linear called).
      taps: {feature name: submodule path} whose outputs `Model.features` also returns.
      route: "auto", "export" or "extract_jax".
      tolerance: the largest relative difference from torch's forward accepted.

    A stored copy is loaded back by importing `type(module)` and building it with `module_kwargs`;
    a class defined in `__main__` or a function cannot be rebuilt elsewhere.
    """
    torch, _, _ = torchax_modules()
    if not isinstance(module, torch.nn.Module):
        from jaxprov.errors import ArgumentError

        raise ArgumentError(f"from_torch: module must be a torch.nn.Module, not {type(module).__name__}")
    if not isinstance(input_spec, InputSpec):
        from jaxprov.errors import ArgumentError

        raise ArgumentError(f"from_torch: input_spec must be a jaxprov.InputSpec, not {type(input_spec).__name__}")
    cls = type(module)
    recipe = {"kind": "module", "class": f"{cls.__module__}:{cls.__qualname__}",
              "kwargs": full_kwargs(cls, module_kwargs)}
    tap = Taps(pre_logits, tuple(sorted((taps or {}).items()))) if (pre_logits or taps) else None
    if tap is not None and tap.pre_logits is None:
        tap = dataclasses.replace(tap, pre_logits=_last_linear(module.eval(), *_torch_inputs(input_spec, _example(input_spec), ())))
    return convert_module(module, input_spec, label=cls.__qualname__, recipe=recipe, name=name,
                          state_dict=state_dict, output_kind=output_kind, taps=tap, route=route,
                          tolerance=tolerance)

