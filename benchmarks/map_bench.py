"""MAP mask pruning on the digit domains: every setting, domain pair and direction, with baselines,
attacks and the provenance of the protected model. Writes docs/results/map.json (after every pair,
atomically, so an interrupted run keeps what it measured).

    PYTHONPATH=. python benchmarks/map_bench.py [--out docs/results/map.json] [--steps 600]
        [--pairs mnistm:mnist,mnist:mnistm,syn:mnist,mnist:syn] [--attack-steps 100] [--independents 3]
        [--quick]   (--markdown prints --out as the tables of docs/results.md)
        [--config '{"alpha": 0.5}'] [--synth-config '{"steps": 200}']  (MapConfig / SynthConfig overrides)
        [--merge]   (keep --out's other pairs: this run's pairs replace theirs, the rest stay; with
                     --settings, a replaced pair keeps the old rows of the settings this run skips)
        [--settings source-available,source-free,data-free]  (the settings run; the baselines and attacks
                     use the source-available mask and are skipped without it)
        [--labels]  (give the held-out mask choice, MapConfig.select_n, the training splits' labels)
        [--provenance-only]  (the first pair's source-available protected model against its source and
                              --independents independents under the shipped default verdict, merged into --out)

Per pair (authorised source domain A, unauthorised domain U): a lenet_bn source trained on A's
training split; MAP in source-available (A and U training splits), source-free (U only; a
BatchNorm-statistics pseudo-source) and data-free (nothing; pseudo-source and neighbour domains);
accuracies on A's and U's test splits before and after, ST-D; baselines at the learned mask's
sparsity (random, magnitude) and an NTL-style model; attacks on the source-available protected
model. On the first pair also the channel-granularity mask, and the provenance of the protected
model against its source and independently trained models (jaxprov.compare, default verdict).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxprov  # noqa: E402
from jaxprov import atomic, datasets, models, protect  # noqa: E402
from jaxprov.protect import attacks, baselines, data as data_lib  # noqa: E402
from jaxprov.training import derive  # noqa: E402
from jaxprov.training.loop import accuracy  # noqa: E402

ARCH = "lenet_bn"
SOURCE_EPOCHS = 4
MASK_KEY = 100  # a run's n-th pair learns its mask from PRNGKey(MASK_KEY + n)


def split(domain: str, purpose: str) -> str:
    return f"{domain}:{data_lib.TRAIN_SPLIT.get(domain, 'train')}" if purpose == "train" else f"{domain}:test"


def train(x, y, seed: int, name: str):
    """The benchmark's lenet_bn recipe (SOURCE_EPOCHS epochs, lr 2e-3, batch 64) from PRNGKey(seed): the
    sources (seed 1, named `source_name`) and the independents of the provenance check."""
    return derive.train(ARCH, x, y, jax.random.PRNGKey(seed), epochs=SOURCE_EPOCHS, lr=2e-3, batch=64, name=name)


def setting_data(setting: str, train_a, train_u, labels: bool) -> dict:
    """protect.protect's data arguments for `setting` from the (x, y) training splits: the inputs the
    setting takes and, with `labels`, their labels for the held-out mask choice."""
    use = {"authorised": setting == "source-available", "unauthorised": setting != "data-free"}
    out = {}
    for role, (x, y) in (("authorised", train_a), ("unauthorised", train_u)):
        out[role] = x if use[role] else None
        out[f"{role}_y"] = y if use[role] and labels else None
    return out


def train_source(domain: str, x, y):
    """The source of the pairs authorised on `domain`, trained on (x, y), its training split."""
    return train(x, y, 1, f"{ARCH}-{domain}")


def run_record(argv: list[str]) -> dict:
    """The command and machine a run records (its document, each pair, the provenance)."""
    return {"command": " ".join(["python", "benchmarks/map_bench.py", *argv]), "tree": _tree(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": str(jax.devices()[0]),
                        "load_at_start": os.getloadavg()[0]}}


def _tree() -> str:
    """The commit this run's code is at, marked "+ uncommitted changes" when the work tree differs."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "map.json"))
    ap.add_argument("--pairs", default="mnistm:mnist,mnist:mnistm,syn:mnist,mnist:syn")
    ap.add_argument("--attack-steps", type=int, default=100)
    ap.add_argument("--independents", type=int, default=3)
    ap.add_argument("--steps", type=int, default=protect.MapConfig().steps)
    ap.add_argument("--quick", action="store_true", help="fewer steps and no attacks (a smoke run)")
    ap.add_argument("--no-extras", action="store_true", help="skip the channel mask and provenance on the first pair")
    ap.add_argument("--from-log", nargs="+", help="rebuild --out from the stdout logs of runs cut short by a deadline "
                                                  "(the figures they printed, to 3 decimals; labelled with each log's run line)")
    ap.add_argument("--markdown", action="store_true", help="print --out's results as docs/results.md tables")
    ap.add_argument("--config", default="{}", help="JSON overrides of protect.MapConfig")
    ap.add_argument("--synth-config", default="{}", help="JSON overrides of protect.SynthConfig")
    ap.add_argument("--merge", action="store_true", help="keep --out's pairs that this run does not measure")
    ap.add_argument("--settings", default=",".join(protect.SETTINGS),
                    help="comma-separated settings to run (baselines and attacks need source-available)")
    ap.add_argument("--labels", action="store_true",
                    help="give the held-out mask choice (select_n) the training splits' labels")
    ap.add_argument("--provenance-only", action="store_true",
                    help="only the provenance of the first pair's source-available protected model (merged)")
    args = ap.parse_args()
    if args.from_log:
        atomic.atomic_write(Path(args.out), (json.dumps(from_logs(args.from_log), indent=2) + "\n").encode())
        return 0
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    settings = args.settings.split(",")
    if not set(settings) <= set(protect.SETTINGS):
        raise SystemExit(f"map_bench: --settings takes a comma-separated subset of {', '.join(protect.SETTINGS)}; "
                         f"got {args.settings!r}")
    steps = 40 if args.quick else args.steps
    spec = models.create(ARCH)[2]
    config = protect.MapConfig(**{"steps": steps, "batch": 128, **json.loads(args.config)})
    synth_config = protect.SynthConfig(**{"n": 256 if args.quick else 512, "steps": 50 if args.quick else 100,
                                          **json.loads(args.synth_config)})
    record = run_record(sys.argv[1:])
    doc = {"benchmark": "map", **record,
           "versions": {"jaxprov": jaxprov.__version__, "jax": jax.__version__},
           "arch": ARCH, "source_epochs": SOURCE_EPOCHS, "config": config.to_json(),
           "synth_config": synth_config.to_json(), "pairs": []}
    # The log's first line: how this run was made, which --from-log reads back.
    print("run " + json.dumps({key: doc[key] for key in ("command", "machine", "versions", "config", "synth_config")}),
          flush=True)
    old = json.loads(Path(args.out).read_text()) if (args.merge or args.provenance_only) and Path(args.out).exists() else None
    if args.provenance_only:
        return provenance_only(args, old or doc, record, config, spec)
    sources = {}
    t_all = time.time()
    for n_pair, pair in enumerate(args.pairs.split(",")):
        a, u = pair.split(":")
        t0 = time.time()
        xa, ya = datasets.inputs(split(a, "train"), spec)
        xu, yu = datasets.inputs(split(u, "train"), spec)
        test = {"authorised": datasets.inputs(split(a, "test"), spec),
                "unauthorised": datasets.inputs(split(u, "test"), spec)}
        if a not in sources:
            sources[a] = train_source(a, xa, ya)
            print(f"source {a}: {time.time() - t0:.0f} s", flush=True)
        source = sources[a]
        row = {"authorised": a, "unauthorised": u, "settings": {},
               **({"baselines": {}, "attacks": []} if "source-available" in settings else {})}
        key = jax.random.PRNGKey(MASK_KEY + n_pair)
        for setting in (s for s in protect.SETTINGS if s in settings):
            ts = time.time()
            result = protect.protect(source, setting, key, config, synth_config=synth_config,
                                     **setting_data(setting, (xa, ya), (xu, yu), args.labels))
            row["settings"][setting] = {**protect.evaluate(source, result.model, test["authorised"],
                                                           test["unauthorised"]),
                                        "density": result.run.density, "seconds": round(time.time() - ts, 1),
                                        "final_losses": result.run.history[-1],
                                        **({"selected": result.run.selected} if result.run.selected else {})}
            print(f"{a}->{u} {setting}: {_short(row['settings'][setting])}", flush=True)
            if setting == "source-available":
                protected = result
        if "source-available" in settings:
            baselines_and_attacks(args, doc, row, n_pair == 0, source, protected, key, config,
                                  (xa, ya), (xu, yu), test)
        row["seconds"] = round(time.time() - t0, 1)
        row["config"], row["synth_config"] = config.to_json(), synth_config.to_json()
        row["command"], row["machine"], row["tree"] = doc["command"], doc["machine"], doc["tree"]
        doc["pairs"].append(row)
        doc["seconds"] = round(time.time() - t_all, 1)
        atomic.atomic_write(Path(args.out), (json.dumps(merged(old, doc) if old else doc, indent=2) + "\n").encode())
    return 0


def baselines_and_attacks(args, doc: dict, row: dict, first: bool, source, protected, key, config, train_a,
                          train_u, test) -> None:
    """Into `row`: the baselines at the source-available mask's sparsity, the attacks on its
    protected model and, on a run's `first` pair (unless --no-extras), the channel mask and the
    provenance (into `doc`)."""
    (xa, ya), (xu, yu) = train_a, train_u
    a, u = row["authorised"], row["unauthorised"]
    learned = protected.run.masks
    for name, masks in (("random", baselines.random_masks(learned, jax.random.PRNGKey(7))),
                        ("magnitude", baselines.magnitude_masks(learned, source.params, config.granularity))):
        row["baselines"][name] = protect.evaluate(source, baselines.apply_baseline(source, masks, name),
                                                  test["authorised"], test["unauthorised"])
    if not args.quick:
        ntl = baselines.ntl(ARCH, xa, ya, xu, jax.random.PRNGKey(8), epochs=SOURCE_EPOCHS)
        row["baselines"]["ntl"] = {"authorised": accuracy(ntl, *test["authorised"]),
                                   "unauthorised": accuracy(ntl, *test["unauthorised"])}
        ev = attacks.evaluator(test)
        row["attacks"] += attacks.finetune_unauthorised(protected.model, xu, yu, (0.01, 0.05, 0.10),
                                                        jax.random.PRNGKey(9), ev, steps=args.attack_steps)
        row["attacks"] += attacks.fresh_reference(protected.model, xu, yu, (0.01,), jax.random.PRNGKey(9), ev,
                                                  steps=args.attack_steps)
        row["attacks"] += attacks.recalibrate_unauthorised(protected.model, xu, (0.01, 1.0), jax.random.PRNGKey(9), ev)
        row["attacks"].append(attacks.finetune_authorised(protected.model, xa[:400], ya[:400],
                                                          jax.random.PRNGKey(10), ev, steps=args.attack_steps))
        row["attacks"].append(attacks.prune(protected.model, 0.3, xa[:400], ya[:400], jax.random.PRNGKey(11), ev))
    print(f"{a}->{u} baselines {json.dumps(row['baselines'])}", flush=True)
    print(f"{a}->{u} attacks {json.dumps(row['attacks'])}", flush=True)
    if first and not args.no_extras:
        channel = protect.protect(source, "source-available", key,
                                  dataclasses.replace(config, granularity="channel"),
                                  **setting_data("source-available", train_a, train_u, args.labels))
        row["channel_granularity"] = {**protect.evaluate(source, channel.model, test["authorised"],
                                                         test["unauthorised"]), "density": channel.run.density}
        print(f"{a}->{u} channel: {_short(row['channel_granularity'])}", flush=True)
        if not args.quick:
            doc["provenance"] = provenance(source, protected.model, xa, ya, args.independents)
            print(f"provenance {json.dumps(doc['provenance'])}", flush=True)


def merged(old: dict, new: dict) -> dict:
    """`old` with `new`'s pairs (and provenance, when measured) in place of old ones of the same
    (authorised, unauthorised); each pair keeps the config, command and machine it was measured with.
    What the new run did not measure of an old pair stays, with the old pair's config, command and
    tree beside it: a settings row (`measured_with`), the channel-mask row, and the baselines and
    attacks when the new run skipped source-available (`baselines_attacks_measured_with`)."""
    fresh = {(r["authorised"], r["unauthorised"]): r for r in new["pairs"]}
    pairs = []
    for r in old["pairs"]:
        row = fresh.pop((r["authorised"], r["unauthorised"]), None)
        if row is not None:
            kept = {name: _stamped(result, r) for name, result in r["settings"].items() if name not in row["settings"]}
            both = {**row["settings"], **kept}
            row = {**row, "settings": {name: both[name] for name in sorted(both, key=_setting_order)}}
            if "baselines" not in row:  # a run without source-available: the old mask's baselines and attacks
                row.update({key: r[key] for key in ("baselines", "attacks")},
                           baselines_attacks_measured_with=r.get("baselines_attacks_measured_with", _measured_with(r)))
            row.update({key: _stamped(r[key], r) for key in r if key.startswith("channel_granularity") and key not in row})
        pairs.append(row or r)
    pairs += list(fresh.values())
    out = {**old, "pairs": pairs}
    if "provenance" in new:
        out["provenance"] = new["provenance"]
        out.pop("provenance_measured", None)  # it described the old rows
    return out


def _setting_order(name: str) -> int:
    return protect.SETTINGS.index(name) if name in protect.SETTINGS else len(protect.SETTINGS)


def _stamped(result: dict, row: dict) -> dict:
    """An old pair's `result` kept by a merge, with how it was made (`measured_with`: its own, where an
    earlier merge stamped it, else the pair's)."""
    return {**result, "measured_with": result.get("measured_with", _measured_with(row))}


def _measured_with(row: dict) -> dict:
    """How an old pair's rows were made: its config, synth_config, command and tree, where recorded."""
    return {key: row[key] for key in ("config", "synth_config", "command", "tree") if key in row}


def provenance_only(args, doc: dict, record: dict, config, spec) -> int:
    """The first pair's source (trained as in main) and its source-available protected model, and the
    provenance of that model under the shipped default verdict, written into `doc`'s provenance (and how
    it was measured, `record` included, beside it in provenance_measured)."""
    a, u = args.pairs.split(",")[0].split(":")
    xa, ya = datasets.inputs(split(a, "train"), spec)
    xu, _ = datasets.inputs(split(u, "train"), spec)
    source = train_source(a, xa, ya)
    protected = protect.protect(source, "source-available", jax.random.PRNGKey(MASK_KEY), config, authorised=xa,
                                unauthorised=xu)
    t0 = time.time()
    doc["provenance"] = provenance(source, protected.model, xa, ya, args.independents)
    doc["provenance_measured"] = {"pair": f"{a}:{u}", "config": config.to_json(), **record,
                                  "verdict": "jaxprov/data/verdict.json (shipped default)",
                                  "seconds": round(time.time() - t0, 1)}
    print(f"provenance {json.dumps(doc['provenance'])}", flush=True)
    atomic.atomic_write(Path(args.out), (json.dumps(doc, indent=2) + "\n").encode())
    return 0


def provenance(source, protected, x, y, n: int) -> dict:
    """The default verdict on (source, protected) and on (source, each independent), each with the
    other independents as the null."""
    independents = [train(x, y, 20 + i, f"independent{i}") for i in range(n)]
    out = {"protected": _verdict(source, protected, independents)}
    for i, m in enumerate(independents):
        out[m.name] = _verdict(source, m, independents[:i] + independents[i + 1:])
    return out


def _verdict(a, b, null) -> dict:
    result = jaxprov.compare(a, b, null=null)
    return {"verdict": result.answer.verdict, "p_derived": result.answer.probability, "reason": result.answer.reason}


def from_logs(paths: list[str]) -> dict:
    """The document of runs whose logs are `paths` (what each printed before it was stopped). The
    configs, versions, command and machine are each log's own (its `run` line); a log without one,
    or logs of runs with different configs or versions, are refused (SystemExit, one line)."""
    logs = {path: _read_log(path) for path in paths}
    records = {path: _run_line(path, lines) for path, lines in logs.items()}
    first = next(iter(records.values()))
    for path, record in records.items():
        for key in ("config", "synth_config", "versions"):
            if record[key] != first[key]:
                raise SystemExit(f"map_bench: {path} was run with another {key} than {paths[0]}; rebuild them apart")
    pairs = {}
    doc = {"benchmark": "map", "rebuilt_from_logs": list(paths), "versions": first["versions"], "arch": ARCH,
           "source_epochs": SOURCE_EPOCHS, "config": first["config"], "synth_config": first["synth_config"],
           "pairs": []}
    for path, lines in logs.items():
        for number, line in enumerate(lines, 1):
            try:
                _read_line(line, doc, pairs, records[path])
            except (ValueError, TypeError) as e:
                raise SystemExit(f"map_bench: {path}:{number}: not a line map_bench prints ({e})") from None
    doc["pairs"] = list(pairs.values())
    return doc


def _read_line(line: str, doc: dict, pairs: dict, record: dict) -> None:
    """One log line into `doc` (the provenance) or its pair's row in `pairs`; other lines are skipped."""
    head, _, rest = line.partition(" ")
    if head == "provenance":
        doc["provenance"] = json.loads(rest)
        return
    if "->" not in head:
        return
    a, u = head.split("->")
    row = pairs.setdefault((a, u), {"authorised": a, "unauthorised": u, "settings": {}, "baselines": {},
                                    "attacks": []})
    row.update({key: record[key] for key in ("config", "synth_config", "command", "machine")})
    what, _, values = rest.partition(" ")
    if what in ("baselines", "attacks"):
        row[what] = json.loads(values)
        return
    fields = dict(item.rsplit(" ", 1) for item in values.split(", "))
    result = {k: float(v) for k, v in fields.items()}
    if what == "channel:":
        row["channel_granularity"] = result
    else:
        row["settings"][what.rstrip(":")] = result


def _read_log(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"map_bench: cannot read the log {path}: {e}") from None


def _run_line(path: str, lines: list[str]) -> dict:
    """The `run` line main prints first: the run's command, machine, versions and configs."""
    for line in lines:
        head, _, rest = line.partition(" ")
        if head == "run":
            try:
                record = json.loads(rest)
            except ValueError:
                record = None
            if isinstance(record, dict) and {"command", "machine", "versions", "config", "synth_config"} <= set(record):
                return record
            break
    raise SystemExit(f"map_bench: {path} does not record its run's config (no valid 'run' line; logs from before "
                     f"map_bench printed it cannot be labelled)")


def markdown(doc: dict) -> str:
    """The tables of docs/results.md's MAP section."""
    lines = ["| pair (authorised -> unauthorised) | setting | authorised before -> after | unauthorised before -> after "
             "| ST-D | kept |", "|---|---|---|---|---|---|"]
    for row in doc["pairs"]:
        pair = f"{row['authorised']} -> {row['unauthorised']}"
        for setting, r in row["settings"].items():
            lines.append(f"| {pair} | {setting} | {r['authorised_before']:.3f} -> {r['authorised_after']:.3f} | "
                         f"{r['unauthorised_before']:.3f} -> {r['unauthorised_after']:.3f} | {r['st_d']:.3f} | "
                         f"{r['density']:.1%} |")
        for name, r in row.get("baselines", {}).items():
            if "st_d" in r:
                lines.append(f"| {pair} | baseline: {name} mask | {r['authorised_before']:.3f} -> "
                             f"{r['authorised_after']:.3f} | {r['unauthorised_before']:.3f} -> "
                             f"{r['unauthorised_after']:.3f} | {r['st_d']:.3f} | same |")
            else:
                lines.append(f"| {pair} | baseline: {name} (from scratch) | {r['authorised']:.3f} | "
                             f"{r['unauthorised']:.3f} | | |")
        if "channel_granularity" in row:
            r = row["channel_granularity"]
            lines.append(f"| {pair} | source-available, channel mask | {r['authorised_before']:.3f} -> "
                         f"{r['authorised_after']:.3f} | {r['unauthorised_before']:.3f} -> "
                         f"{r['unauthorised_after']:.3f} | {r['st_d']:.3f} | {r['density']:.1%} |")
    lines += ["", "| pair | attack on the source-available protected model | authorised | unauthorised |", "|---|---|---|---|"]
    for row in doc["pairs"]:
        for at in row.get("attacks", []):
            what = {"finetune_unauthorised": f"fine-tune on {at.get('share', 0):.0%} of unauthorised ({at.get('n')})",
                    "finetune_authorised": f"fine-tune on {at.get('n')} authorised",
                    "finetune_fresh_init": f"reference: a fresh init fine-tuned on {at.get('share', 0):.0%} of unauthorised",
                    "recalibrate_unauthorised": f"recalibrate BatchNorm on {at.get('share', 0):.0%} of unauthorised, "
                                                f"unlabelled ({at.get('n')})",
                    "prune": f"prune {at.get('fraction', 0):.0%} more"}[at["attack"]]
            lines.append(f"| {row['authorised']} -> {row['unauthorised']} | {what} | {at['authorised']:.3f} | "
                         f"{at['unauthorised']:.3f} |")
    if "provenance" in doc:
        lines += ["", "| suspect vs the source | default verdict | P(derived) |", "|---|---|---|"]
        for name, r in doc["provenance"].items():
            p = "" if r["p_derived"] is None else f"{r['p_derived']:.2f}"
            lines.append(f"| {name} | {r['verdict']} | {p} |")
    return "\n".join(lines)


def _short(r: dict) -> str:
    return ", ".join(f"{k} {r[k]:.3f}" for k in ("authorised_before", "authorised_after", "unauthorised_before",
                                                   "unauthorised_after", "st_d", "density") if k in r)


if __name__ == "__main__":
    sys.exit(main())
