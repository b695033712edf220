"""The suite imports without PyTorch: torch is reached only through `pytest.importorskip`, so on a
machine without it the torch-free tests still run (tests/no_torch.py hides torch in a subprocess)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Torch-free tests in modules whose other tests need torch, and one that needs it (skipped).
TORCH_FREE = ["test_not_a_model_directory", "test_non_model_directory_is_named", "test_feature_names_cover_every_block",
              "test_bare_pickle_is_refused_without_unpickling", "test_empty_missing_and_non_model_directories"]
NEEDS_TORCH = "test_whole_module_pickle_is_refused"


def test_every_module_collects_and_torch_free_tests_pass_without_torch():
    selected = " or ".join(TORCH_FREE + [NEEDS_TORCH])
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "tests.no_torch", "-p", "no:cacheprovider",
                          "-k", selected, "tests"], cwd=ROOT, capture_output=True, text=True)
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "error" not in summary, summary
    # test_feature_names_cover_every_block runs for three architectures.
    assert re.search(r"\b7 passed\b", summary), summary
    assert re.search(rf"SKIPPED \[1\] tests/test_readers.py:\d+: could not import 'torch'", run.stdout), run.stdout[-3000:]
