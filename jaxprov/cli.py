"""The `jaxprov` command line.

Exit codes: 0 done; 1 `scan` done with skipped entries (listed; the report is written); 2 a bad
input or environment (a JaxprovError, or a file-system error such as a read-only output folder):
one line "jaxprov: error: ..." naming the file and what to do; 3 a bug in jaxprov (an exception no
check anticipated): one line asking for a report, the traceback only with JAXPROV_DEBUG=1;
130 interrupted. No input is meant to reach exit 3: every case found is a JaxprovError.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_BUG = 3
EXIT_NO_EVIDENCE = 1  # compare: no method could compare the pair, so no verdict


def _generic_options(args) -> dict:
    """The generic converter's options of `convert` and `info` (--module, --module-kwargs,
    --input-shape/-mean/-std) as keyword arguments of api.convert / api.load."""
    if args.module_kwargs is not None and args.module is None:
        from jaxprov.errors import ArgumentError

        raise ArgumentError("--module-kwargs needs --module package.module:Class")
    if args.module is None and args.input_shape is None:
        return {}
    from converters import torch_sources

    generic = {"module": args.module, "input_spec": torch_sources.input_spec_from_shape(
        args.input_shape, args.input_mean, args.input_std)}
    if args.module is not None:
        generic["module_kwargs"] = torch_sources.parse_kwargs(args.module_kwargs)
    return generic


def _cmd_convert(args) -> int:
    from jaxprov import api

    generic = _generic_options(args)
    out, model, converted = api.convert(args.src, args.out, args.arch, force=args.force, progress=True, **generic)
    print(model.summary())
    print(f"stored:      {out}" + ("" if converted else "  (already converted; nothing recomputed)"))
    return 0


def _cmd_info(args) -> int:
    from jaxprov import api, store

    path = Path(args.path)
    generic = _generic_options(args)
    if store.is_model_dir(path) and not generic:  # metadata only: no params are read
        meta = store.read_meta(path)
        info = {k: meta.get(k) for k in ("name", "arch", "num_params", "input_spec", "output_kind",
                                         "source", "converter", "params_sha256", "versions")}
    else:
        model = api.load(path, args.arch, progress=True, **generic)
        info = {"name": model.name, "arch": model.arch, "num_params": model.num_params,
                "input_spec": model.input_spec.to_json(), "output_kind": model.output_kind,
                "source": model.meta.get("source"), "converter": model.meta.get("converter")}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    spec = info["input_spec"]
    print(f"name:        {info['name']}")
    print(f"arch:        {info['arch']}")
    print(f"parameters:  {info['num_params']:,}")
    print(f"input:       {spec['modality']} {spec['layout']} {tuple(spec['shape'])} {spec['dtype']}"
          + (f", mean={tuple(spec['mean'])} std={tuple(spec['std'])}" if spec.get("mean") else ""))
    print(f"output:      {info['output_kind']}")
    if info.get("source"):
        print(f"source:      {info['source'].get('path')}  sha256 {info['source'].get('sha256')}")
    if info.get("converter"):
        print(f"converter:   v{info['converter'].get('version')} ({info['converter'].get('source_family')}), "
              f"source dtypes {', '.join(info['converter'].get('source_dtypes', []))}")
    return 0


def _cmd_compare(args) -> int:
    import jax

    from jaxprov import api, comparison as compare_lib

    a, b = api.load(args.a, progress=True), api.load(args.b, progress=True)
    null = _load_null(args.null)
    methods = args.method or None
    if args.dna is not None:  # the named methods, dna read from the given detector
        from jaxprov.methods.dna import DNA

        methods = [DNA(detector=args.dna) if m == "dna" else m for m in (methods or ["dna"])]
    result = compare_lib.compare(a, b, methods, null=null, seeds=args.seeds,
                                 key=jax.random.PRNGKey(args.seed))
    print(compare_lib.dumps(result) if args.json else result.summary())
    if not result.has_evidence:
        print("jaxprov: error: no method could compare the two models; the verdict is inconclusive "
              "(see the reasons above)", file=sys.stderr)
        return EXIT_NO_EVIDENCE
    return 0


def _load_null(folder: str | None) -> list:
    """The models of a --null folder (none without one); unreadable entries are warned about."""
    from jaxprov.folder import load_zoo_directory

    if not folder:
        return []
    null, failures = load_zoo_directory(folder)
    for line in failures:
        print(f"jaxprov: warning: skipped {line}", file=sys.stderr)
    return null


def _cmd_scan(args) -> int:
    import jax

    from jaxprov import scan

    null = _load_null(args.null)
    methods, config = args.method or None, None
    if args.dna is not None:
        methods, config = methods or ["dna"], {"dna": {"detector": args.dna}}
    result = scan.scan_directory(args.dir, args.out, methods, seeds=args.seeds,
                                 key=jax.random.PRNGKey(args.seed), null=null, method_config=config)
    for tag, group in result.groups.items():
        print(f"{tag}: {len(group['models'])} models -> {group['files']['html']}")
        for name, sim in group["similarity"].items():
            best = _top_pairs(sim, 5)
            print(f"  {name}: most similar pairs")
            for a, b, v in best:
                print(f"    {v:+.4f}  {a}  ~  {b}")
    for line in result.failures:
        print(f"jaxprov: warning: skipped {line}", file=sys.stderr)
    return 1 if result.failures else 0


def _cmd_dna_train(args) -> int:
    import dataclasses

    from jaxprov import dna
    from jaxprov.bench import dna as bench_dna

    config = dna.TrainConfig()
    if args.steps is not None:
        if args.steps < 1:
            from jaxprov.errors import ArgumentError

            raise ArgumentError(f"--steps must be a positive number of steps, not {args.steps}")
        config = dataclasses.replace(config, stage1_steps=args.steps, stage2_steps=args.steps)
    source = f"--preset {args.preset}" if args.preset else f"--zoo {args.zoo}"
    command = f"jaxprov dna train {source} --out {args.out}" + (f" --steps {args.steps}" if args.steps else "")
    det = bench_dna.train_from_preset(args.preset, args.out, None, config, zoo=args.zoo, command=command,
                                      view=args.view)
    print(f"DNA detector written to {args.out} ({det.meta['n_models']} models, {det.meta['n_pairs']} pairs, "
          f"{det.meta['n_derived_pairs']} derived); use it with --method dna --dna {args.out}")
    return 0


def _cmd_dna_info(args) -> int:
    from jaxprov import dna

    det = dna.load(args.detector)
    info = det.to_json()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    arch = info["architecture"]
    print(f"DNA detector {det.name} ({det.meta['path']})")
    print(f"  input space: {info['input_spec']['modality']} {'x'.join(map(str, info['input_spec']['shape']))}; "
          f"domains: {', '.join(info.get('domains') or ['unrecorded'])}")
    print(f"  view: {arch['view']} (width {det.arch.width}); encoder g: {arch['encoder'] or 'none'}; "
          f"classifier h: {'none (cosine)' if arch['embedding_hidden'] is None else arch['embedding_hidden']}")
    print(f"  trained on {info.get('n_models')} models ({', '.join(info.get('architectures', []))}), "
          f"{info.get('n_pairs')} pairs ({info.get('n_derived_pairs')} derived); recipe "
          f"{str(info.get('recipe_digest'))[:12]}; probes {info.get('probes', {}).get('source')} "
          f"{str(info.get('probes', {}).get('digest'))[:12]}")
    if isinstance(info.get("vocabulary"), dict):
        vocab = info["vocabulary"]
        print(f"  vocabulary: {vocab.get('size')} tokens of {vocab.get('source')} (sha256 {str(vocab.get('sha256'))[:12]})")
    print(f"  versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}; "
          f"params sha256 {info['params_sha256'][:12]}")
    return 0


def _top_pairs(sim, k):
    from jaxprov.report import top_pairs

    return top_pairs(list(sim.labels), sim.values, k)


def _cmd_archs(args) -> int:
    from jaxprov import models

    for name in models.list_archs():
        family, _, _ = models.resolve(name)
        print(f"{name:24s} {family.name}")
    print("\ngeneric sources (any PyTorch model, traced by torchax; needs jaxprov[torch], see docs/architectures.md):")
    for source, how in GENERIC_SOURCES:
        print(f"  {source:40s} {how}")
    return 0


GENERIC_SOURCES = (
    ("--module package.module:Class", "your own nn.Module class, built with --module-kwargs JSON"),
    ("--arch timm:NAME", "any timm architecture (e.g. timm:resnet18d); input size from timm"),
    ("MODEL.pt2", "a torch.export archive (graph and weights; nothing in it is unpickled)"),
    ("Hugging Face folder", "any model_type transformers knows without a family above (distilbert, roberta, "
                            "gpt2, vit, ...)"),
)


def _cmd_bench(args) -> int:
    from jaxprov.bench import reuse

    command = "jaxprov bench reuse --preset " + args.preset + " --out " + str(args.out)
    doc = reuse.run(args.preset, args.out, command=command)
    default = doc["results"]["default"]
    print(f"held-out test group, {doc['n_pairs']['test']} pairs; default verdict fitted on "
          f"{doc['n_pairs']['val']} val pairs")
    print(f"  {'reuse type':28s} {'AUC':>6s} {'TPR@1%':>7s} {'correct':>8s}")
    for reuse_type, r in default.items():
        print(f"  {reuse_type:28s} {r['auc']:6.3f} {r['tpr_at_1pct_fpr']:7.3f} {r['correctness']:8.3f}")
    print(f"report: {Path(args.out) / 'reuse.md'}  (JSON: reuse.json, ROC curves: roc/, verdict: verdict.json)")
    return 0


def _progress_bar(what: str):
    """A tqdm bar on stderr (with ETA) fed by (stage, done, total) callbacks."""
    from tqdm import tqdm

    bars = {}

    def update(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{what} {stage}", unit="sample", file=sys.stderr,
                                     leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _cmd_serve(args) -> int:
    from jaxprov import api
    from jaxprov.exits import server, staged

    from jaxprov.errors import JaxprovError

    if not 0 <= args.port <= 65535:
        raise JaxprovError(f"--port {args.port} is not a TCP port (0..65535; 0 picks a free one)")
    model = api.load(args.model, args.arch, progress=True)
    httpd = server.make_server(staged.EarlyExit(model, args.threshold), args.port, args.host)
    print(f"serving {model.name} ({model.arch}) at {server.url_of(httpd)} with early exit at confidence "
          f"{args.threshold}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


def _cmd_exits_make(args) -> int:
    import jax

    from jaxprov import api
    from jaxprov.exits import craft, make

    model = api.load(args.model, args.arch, progress=True)
    config = craft.CraftConfig(eps=args.eps, steps=args.steps, per_exit=args.per_exit,
                               seeds_per_exit=3 * args.per_exit, assign=args.assign, pool=args.pool)
    null, copies, decoys = _load_null(args.null), _load_null(args.copies), _load_null(args.decoys)
    update = _progress_bar("fingerprint")
    fingerprint = make.make(model, args.seeds, args.threshold, config, jax.random.PRNGKey(args.seed), null,
                            args.repeats, progress=update, copies=copies, decoys=decoys)
    fingerprint.save(args.out)
    calibration = fingerprint.meta["calibration"]
    print(f"fingerprint: {args.out}  ({fingerprint.n} samples, kept per stop exit "
          f"{fingerprint.meta['recipe']['kept']}, threshold {fingerprint.threshold}, sha256 {fingerprint.digest[:16]}...)")
    print("calibration: " + (f"{len(calibration['match'])} independent models, match rates "
                             + ", ".join(f"{v:.3f}" for v in calibration["match"]) if calibration
                             else "none (give --null FOLDER of independent multi-exit models)"))
    return 0


def _cmd_exits_verify(args) -> int:
    from jaxprov import api
    from jaxprov.errors import JaxprovError
    from jaxprov.exits import client, fingerprint as fingerprint_lib, verify

    fingerprint = fingerprint_lib.load(args.fingerprint)
    if (args.suspect is None) == (args.url is None):
        raise JaxprovError("give either a SUSPECT model or --url URL of a served one, not both or neither")
    threshold = fingerprint.threshold if args.threshold is None else args.threshold
    if args.url:
        suspect = client.HttpSuspect(args.url, timeout=args.timeout, retries=args.retries)
    else:
        suspect = verify.InProcessSuspect(api.load(args.suspect, progress=True), threshold)
    calibration = None
    if args.null:
        null = [verify.InProcessSuspect(m, threshold) for m in _load_null(args.null)]
        calibration = verify.calibrate(fingerprint, null, args.repeats)
    update = _progress_bar("verify")
    result = verify.verify(fingerprint, suspect, args.repeats, calibration,
                           progress=lambda done, total: update("queries", done, total), null_model=args.null_model,
                           max_repeats=args.max_repeats)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.summary())
    return 0


def _cmd_protect_map(args) -> int:
    import jax

    from jaxprov import api, protect, store
    from jaxprov.protect import data as data_lib

    target = store.check_target(args.out, overwrite=args.force)  # before any work: a bad --out fails now
    config = protect.MapConfig(granularity=args.granularity, **{
        k: getattr(args, k) for k in ("steps", "batch", "lr", "alpha", "beta", "lam", "gamma", "feature_keep",
                                  "recalibrated", "select_n")
        if getattr(args, k) is not None},
        **({"layers": tuple(n for n in args.layers.split(",") if n)} if args.layers else {}))
    source = api.load(args.model, args.arch, progress=True)
    classes = _classes(source)
    given = {role: data_lib.load(arg, source.input_spec, classes, "train") if arg else None
             for role, arg in (("authorised", args.authorised), ("unauthorised", args.unauthorised))}
    checkpoint = target.parent / f".{target.name}.map-checkpoint.npz"
    update = _progress_bar("protect")
    result = protect.protect(
        source, args.setting, jax.random.PRNGKey(args.seed), config,
        authorised=None if given["authorised"] is None else given["authorised"].x,
        unauthorised=None if given["unauthorised"] is None else given["unauthorised"].x,
        authorised_y=None if given["authorised"] is None else given["authorised"].y,
        unauthorised_y=None if given["unauthorised"] is None else given["unauthorised"].y,
        synth_config=protect.SynthConfig(n=args.synth_n), synthesis=args.synthesis, checkpoint=checkpoint,
        progress=update, sources={"source_model": str(Path(args.model).absolute()),
                                  **{r: d.source for r, d in given.items() if d is not None}})
    store.save_model(result.model, target, overwrite=args.force)
    checkpoint.unlink(missing_ok=True)
    print(f"protected:   {target}  ({args.setting}, {config.granularity} mask keeps {result.run.density:.1%} of "
          f"the kernel weights{'; resumed at step ' + str(result.run.resumed_from) if result.run.resumed_from else ''})")
    if not config.recalibrated and protect.synth.has_batchnorm(source):
        print(f"jaxprov: warning: {target} has BatchNorm and was protected without --recalibrated: re-estimating its "
              f"statistics on the unauthorised domain (no labels needed) may undo the protection; `jaxprov protect "
              f"eval {target}` reports the accuracy after it", file=sys.stderr)
    return 0


def _classes(model) -> int:
    import jax

    return int(jax.eval_shape(model.apply, model.params, model.input_spec.example(1)).shape[-1])


def _cmd_protect_eval(args) -> int:
    from jaxprov import api, protect
    from jaxprov.errors import JaxprovError
    from jaxprov.protect import data as data_lib
    from jaxprov.training.loop import accuracy

    protected = api.load(args.model, progress=True)
    recorded = dict(protected.meta.get("protection", {}).get("data", {}))
    source_path = args.source or recorded.get("source_model")
    if not source_path:
        raise JaxprovError(f"{args.model}: no source model recorded; give --source MODEL (the unprotected model)")
    source = api.load(source_path, progress=True)
    classes = _classes(source)
    roles = {}
    for role in ("authorised", "unauthorised"):
        arg = getattr(args, role) or _test_split(recorded.get(role))
        if arg is None:
            raise JaxprovError(f"{args.model}: give --{role} DATA (labelled) to measure the protection")
        roles[role] = data_lib.load(arg, source.input_spec, classes, "test")
    result = protect.evaluate(source, protected,
                              roles["authorised"].labelled("evaluation"), roles["unauthorised"].labelled("evaluation"),
                              classes)
    extra = {}
    if protect.synth.has_batchnorm(protected):  # the label-free attack: statistics re-estimated on the domain
        from jaxprov.training import derive

        x, y = roles["unauthorised"].labelled("evaluation")
        result["recalibrated"] = {"before": accuracy(derive.recalibrate(source, x), x, y),
                                  "after": accuracy(derive.recalibrate(protected, x), x, y)}
    for arg in args.data or []:
        d = data_lib.load(arg, source.input_spec, classes, "test")
        extra[d.source] = {"before": accuracy(source, *d.labelled("evaluation")), "after": accuracy(protected, d.x, d.y)}
    out = {"model": str(args.model), "source": str(source_path), "authorised": roles["authorised"].source,
           "unauthorised": roles["unauthorised"].source, **result, "data": extra}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'':14s} {'before':>7s} {'after':>7s}")
    for role in ("authorised", "unauthorised"):
        print(f"{role:14s} {result[role + '_before']:7.3f} {result[role + '_after']:7.3f}  ({roles[role].source})")
    if "recalibrated" in result:
        r = result["recalibrated"]
        print(f"{'recalibrated':14s} {r['before']:7.3f} {r['after']:7.3f}  (unauthorised, BatchNorm statistics "
              "re-estimated on it, no labels)")
    for name, r in extra.items():
        print(f"{'data':14s} {r['before']:7.3f} {r['after']:7.3f}  ({name})")
    print(f"ST-D {result['st_d']:.3f}  (retained {result['retained']:.3f}, removed {result['removed']:.3f}, "
          f"chance {result['chance']:.3f})")
    return 0


def _test_split(recorded: str | None) -> str | None:
    """The test split of a named domain recorded at protection time ("mnistm:train" -> "mnistm:test")."""
    from jaxprov import datasets

    if not recorded or ":" not in recorded or recorded.split(":")[0] not in datasets.SPLITS:
        return None
    return f"{recorded.split(':')[0]}:test"


def _cmd_demo(args) -> int:
    from jaxprov import demo

    return demo.run(Path(args.out))


_METHOD_HELP = ("ddv, gradient_field, sac, ipguard, weights, cka, mistakes, dna, or all (repeatable; default: the "
                "default verdict's methods of non-zero weight, answered by the default verdict; all: every "
                "method, the default verdict still answers)")
_DNA_HELP = ("the DNA detector for --method dna (a folder written by `jaxprov dna train`, or a shipped name; "
             "default: mnist); alone, it implies --method dna")
_SEEDS_HELP = ("probe seeds: mnist, digits, a split such as mnist:test, synthetic, a folder or .npy/.npz "
               "(default: the seeds the default verdict was fitted with, mnist:test)")


def _add_generic_arguments(p) -> None:
    """The generic converter's options, shared by `convert` and `info` (read by _generic_options)."""
    p.add_argument("--module", help="package.module:Class, your own torch.nn.Module for these weights (generic "
                                    "converter; needs jaxprov[torch])")
    p.add_argument("--module-kwargs", help="JSON keyword arguments that build --module, e.g. '{\"width\": 16}'")
    p.add_argument("--input-shape", help="the input of --module (or a timm / .pt2 override): H,W,C for NHWC images, "
                                         "F for vectors")
    p.add_argument("--input-mean", help="per-channel mean of the input normalisation, e.g. 0.5,0.5,0.5")
    p.add_argument("--input-std", help="per-channel std of the input normalisation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxprov", description="Model provenance in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a checkpoint (file or Hugging Face directory) into a stored model")
    p.add_argument("src")
    p.add_argument("--out", help="output directory (default: the content-addressed store, $JAXPROV_HOME)")
    p.add_argument("--arch", help="architecture key, e.g. resnet18 or cifar_resnet56 (default: detect), or timm:NAME "
                                  "for a timm model (generic converter)")
    _add_generic_arguments(p)
    p.add_argument("--force", action="store_true", help="replace a different model already in --out")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="architecture, parameter count, input spec and source hash of a model")
    p.add_argument("path")
    p.add_argument("--arch", help="architecture key, where it cannot be detected, or timm:NAME (generic converter)")
    _add_generic_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("compare", help="is B derived from A? per-method similarity and a calibrated verdict")
    p.add_argument("a", help="the claimed parent (checkpoint, HF directory or stored model)")
    p.add_argument("b", help="the suspect")
    p.add_argument("--method", action="append", help=_METHOD_HELP + "; named methods are answered by the "
                   "per-method tests")
    p.add_argument("--null", help="a folder of models independent of A: calibrates the verdict")
    p.add_argument("--seeds", help=_SEEDS_HELP)
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for probes (default 0)")
    p.add_argument("--dna", metavar="DIR", help=_DNA_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("scan", help="fingerprint a folder of models; write matrices, heatmaps and an HTML report")
    p.add_argument("dir", help="a folder of checkpoints, Hugging Face directories and/or stored models")
    p.add_argument("--out", required=True, help="output folder (reports + the signature cache; reruns resume)")
    p.add_argument("--method", action="append", help=_METHOD_HELP + "; the default verdict's P(derived) matrix "
                   "is written as 'default' unless methods are named")
    p.add_argument("--null", help="a folder of models independent of every scanned one: they calibrate the "
                                  "default verdict (without one, the zoo itself is the null)")
    p.add_argument("--seeds", help=_SEEDS_HELP)
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for probes (default 0)")
    p.add_argument("--dna", metavar="DIR", help=_DNA_HELP)
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("dna", help="Model DNA: train and inspect learned provenance detectors")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("train", help="train a DNA detector on a zoo with known lineage (resumable, with ETA)")
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="build that benchmark preset's DNA training zoo (lineages disjoint from "
                                         "its val and test groups) under OUT/zoo and train on it (cpu, ci; "
                                         "text, text-ci: tiny BERTs on Python's docstrings)")
    source.add_argument("--zoo", help="a zoo folder built from a recipe with roles (e.g. a benchmark's zoo)")
    q.add_argument("--out", required=True, help="the detector folder (checkpoints there; a rerun resumes)")
    q.add_argument("--steps", type=int, default=None, help="optax steps of each stage (default 600)")
    q.add_argument("--view", choices=["logits", "probs", "sorted", "both"], default="logits",
                   help="the view of the outputs in the DNA (sorted: size-free, for other label spaces)")
    q.set_defaults(func=_cmd_dna_train)
    q = actions.add_parser("info", help="what a DNA detector was trained on and how")
    q.add_argument("detector", help="a detector folder, or a shipped detector's name (mnist)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_dna_info)

    p = sub.add_parser("archs", help="list the architecture keys jaxprov knows")
    p.set_defaults(func=_cmd_archs)

    p = sub.add_parser("bench", help="benchmarks jaxprov builds and scores itself")
    bench = p.add_subparsers(dest="benchmark", required=True)
    q = bench.add_parser("reuse", help="build a zoo with known lineage, score every method on every reuse type, "
                                       "fit the default verdict on val and report it on held-out base models")
    q.add_argument("--preset", default="ci", help="ci (minutes on a CPU), cpu (same protocol, larger), "
                                                  "full (ResNet-20 / VGG-16-BN / MobileNet: a GPU)")
    q.add_argument("--out", default="jaxprov-bench-reuse", help="output folder (the zoo and signatures are "
                                                                "reused on a rerun)")
    q.set_defaults(func=_cmd_bench)

    p = sub.add_parser("serve", help="serve a multi-exit model with early exit over HTTP (POST /predict)")
    p.add_argument("model", help="a multi-exit model (checkpoint or stored model)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--threshold", type=float, default=0.9, help="exit confidence threshold q (default 0.9)")
    p.add_argument("--arch", help="architecture key, where it cannot be detected")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("fingerprint", help="fingerprints that prove ownership of a model")
    kinds = p.add_subparsers(dest="kind", required=True)
    q = kinds.add_parser("exits", help="inference-time fingerprints of multi-exit models")
    actions = q.add_subparsers(dest="action", required=True)
    r = actions.add_parser("make", help="craft a timing fingerprint for a multi-exit model")
    r.add_argument("model", help="the owner's multi-exit model")
    r.add_argument("--out", required=True, help="the fingerprint file to write (.npz)")
    r.add_argument("--seeds", default="mnist:test", help=_SEEDS_HELP.replace(
        "(default: the seeds the default verdict was fitted with, mnist:test)", "(default mnist:test)"))
    r.add_argument("--threshold", type=float, default=0.9, help="the owner's exit threshold q (default 0.9)")
    r.add_argument("--per-exit", type=int, default=20, help="samples per stop exit (default 20)")
    r.add_argument("--eps", type=float, default=0.25, help="L-inf radius in raw pixel units (default 0.25)")
    r.add_argument("--steps", type=int, default=60, help="PGD steps (default 60)")
    r.add_argument("--assign", choices=("far", "cycle"), default="far",
                   help="far (default): aim each seed at an exit away from where MODEL stops on it unchanged; "
                        "cycle: seed i at exit i mod K")
    r.add_argument("--pool", type=int, default=2, help="seeds ranked per seed crafted, for --assign far (default 2)")
    r.add_argument("--null", help="a folder of independent multi-exit models: calibrates the verdict")
    r.add_argument("--copies", help="a folder of the owner's own derived copies of MODEL (e.g. pruned and fine-tuned "
                                    "on its data): kept samples must stop right on them")
    r.add_argument("--decoys", help="a folder of independent multi-exit models, not those of --null: kept samples "
                                    "are those on which the fewest decoys stop at the target exit")
    r.add_argument("--repeats", type=int, default=60, help="queries per sample when timing (default 60)")
    r.add_argument("--seed", type=int, default=0, help="PRNG seed of the seed draw (default 0)")
    r.add_argument("--arch", help="architecture key, where it cannot be detected")
    r.set_defaults(func=_cmd_exits_make)
    r = actions.add_parser("verify", help="is a suspect the owner's model? from response times alone")
    r.add_argument("fingerprint", help="a fingerprint file from `jaxprov fingerprint exits make`")
    r.add_argument("suspect", nargs="?", help="a suspect model to run here (or --url)")
    r.add_argument("--url", help="a served suspect, e.g. http://127.0.0.1:8000 (POST /predict)")
    r.add_argument("--threshold", type=float, help="a local suspect's exit threshold (default: the fingerprint's)")
    r.add_argument("--null", help="independent multi-exit models to calibrate on (default: the fingerprint's "
                                  "own calibration)")
    r.add_argument("--repeats", type=int, default=60, help="queries per sample (default 60)")
    r.add_argument("--max-repeats", type=int, help="while the times are noisy (split-half agreement below 0.95), "
                   "send --repeats more rounds, up to this many queries per sample in all (default: --repeats only)")
    r.add_argument("--null-model", choices=("beta-binomial", "binomial"), default="beta-binomial",
                   help="the calibrated null: beta-binomial over the null models' spread (default), or binomial "
                        "at their largest match rate")
    r.add_argument("--timeout", type=float, default=10.0, help="--url: seconds per request (default 10)")
    r.add_argument("--retries", type=int, default=3, help="--url: retries of a failed request (default 3)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=_cmd_exits_verify)

    p = sub.add_parser("protect", help="protect a model against use on unauthorised domains (MAP mask pruning)")
    actions = p.add_subparsers(dest="action", required=True)
    data_help = ("a named domain (mnist, digits, mnistm, syn, mnist_invert, mnist_colour, mnist_texture; NAME:SPLIT "
                 "for a split), an image folder (class folders 0/, 1/, ... for labels) or an .npz (x, optional y)")
    q = actions.add_parser("map", help="learn a binary mask over MODEL's frozen weights (resumable: rerun the same "
                                       "command after an interruption)")
    q.add_argument("model", help="the trained model to protect (stored model or checkpoint)")
    q.add_argument("--setting", required=True, choices=("source-available", "source-free", "data-free"),
                   help="source-available: both data; source-free: no authorised data (synthesised from the model); "
                        "data-free: no data (synthesised pseudo-source and neighbour domains)")
    q.add_argument("--authorised", help="authorised data (source-available): " + data_help)
    q.add_argument("--unauthorised", help="unauthorised data (source-available, source-free): " + data_help)
    q.add_argument("--out", required=True, help="where the protected model is stored")
    q.add_argument("--arch", help="MODEL's architecture key, where it cannot be detected")
    q.add_argument("--granularity", choices=("weight", "channel"), default="weight",
                   help="one mask entry per weight or per output channel (default weight)")
    q.add_argument("--synthesis", choices=("auto", "bn", "inversion"), default="auto",
                   help="pseudo-source synthesis: bn (BatchNorm-statistics matching), inversion, or auto (bn when "
                        "the model has BatchNorm)")
    q.add_argument("--synth-n", type=int, default=1024, help="pseudo-source inputs to synthesise (default 1024)")
    q.add_argument("--steps", type=int, help="mask optimisation steps (default: jaxprov.protect.MapConfig's)")
    q.add_argument("--batch", type=int, help="inputs per domain per step (default: jaxprov.protect.MapConfig's)")
    q.add_argument("--lr", type=float, help="learning rate of the mask scores' optimiser (default: jaxprov.protect.MapConfig's)")
    q.add_argument("--alpha", type=float, help="weight of the unauthorised loss (default: jaxprov.protect.MapConfig's)")
    q.add_argument("--beta", type=float, help="weight of the separation loss (default: jaxprov.protect.MapConfig's)")
    q.add_argument("--lam", type=float, help="weight of the sparsity penalty (default: jaxprov.protect.MapConfig's)")
    q.add_argument("--gamma", type=float, help="weight of the fine-tune-resistance term (unauthorised loss after a "
                                                "simulated attacker step; default: jaxprov.protect.MapConfig's)")
    q.add_argument("--feature-keep", type=float, help="weight of the feature keep term (the masked model's features "
                                                       "held near the source's on the authorised or pseudo-source "
                                                       "batch; helps source-free; default: jaxprov.protect.MapConfig's)")
    q.add_argument("--recalibrated", type=float, help="weight of the unauthorised loss with BatchNorm on the "
                                                       "unauthorised batch's own statistics, so that re-estimating "
                                                       "them on that domain (no labels needed) does not undo the "
                                                       "protection; BatchNorm models (default: "
                                                       "jaxprov.protect.MapConfig's)")
    q.add_argument("--select-n", type=int, help="authorised and unauthorised inputs held out to choose the mask "
                                                 "by: the recorded step that keeps the most held-out authorised "
                                                 "accuracy while the unauthorised accuracy is within chance + 10 "
                                                 "points, read on the data's labels (on the source's answers where "
                                                 "the data are unlabelled or synthesised; default 0: the last "
                                                 "step's mask)")
    q.add_argument("--layers", help="comma-separated top-level layers whose kernels are masked (default: all)")
    q.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    q.add_argument("--force", action="store_true", help="replace a stored model already in --out")
    q.set_defaults(func=_cmd_protect_map)
    q = actions.add_parser("eval", help="accuracies before / after and ST-D of a protected model")
    q.add_argument("model", help="the protected model")
    q.add_argument("--source", help="the unprotected model (default: the one recorded at protection)")
    q.add_argument("--authorised", help="labelled authorised data (default: the test split of the recorded domain)")
    q.add_argument("--unauthorised", help="labelled unauthorised data (default: the test split of the recorded domain)")
    q.add_argument("--data", action="append", help="more labelled data to report accuracies on (repeatable)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_protect_eval)

    p = sub.add_parser("demo", help="run the built-in example")
    p.add_argument("--out", default="jaxprov-demo", help="where the demo writes (default: ./jaxprov-demo)")
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"jaxprov: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from jaxprov.errors import JaxprovError

    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        return args.func(args)
    except JaxprovError as err:
        print(f"jaxprov: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # the file system refused something no check foresaw: still the user's environment
        from jaxprov.store import os_error_line

        line = (os_error_line(err.filename, err, "failed") if err.filename else
                f"{err.strerror or err} ({type(err).__name__}); check the files given and their permissions")
        print(f"jaxprov: error: {_one_line(line)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("jaxprov: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort: one line, not a traceback
        if os.environ.get("JAXPROV_DEBUG"):
            raise
        print(f"jaxprov: internal error: {type(err).__name__}: {_one_line(err)}; this is a bug in jaxprov, please "
              "report it with the command line (JAXPROV_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_BUG


def _one_line(err, limit: int = 2000) -> str:
    """Messages are one line; a message that embeds a file's text (a name with a newline) stays one."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


if __name__ == "__main__":
    sys.exit(main())
