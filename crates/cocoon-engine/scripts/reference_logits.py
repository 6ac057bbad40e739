#!/usr/bin/env python3
"""Reference logits for the tiny test checkpoints, computed with PyTorch + transformers.

This is the independent implementation that tests/reference.rs compares candle
against. It is NOT needed in CI: its output is committed as
tests/data/reference_logits.json. Regenerate it (only if the fixture generator in
src/testing.rs changes) with:

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch transformers safetensors
    cargo run -p cocoon-engine --example write_fixture -- /tmp/cocoon-fixtures
    /tmp/refvenv/bin/python crates/cocoon-engine/scripts/reference_logits.py \
        /tmp/cocoon-fixtures crates/cocoon-engine/tests/data/reference_logits.json

For each architecture it runs one full forward pass over prompt + continuation (no KV
cache, float32, eager attention) and records the next-token logits at positions
len(prompt)-1 .. len(prompt)+len(continuation)-1. The Rust test computes the same rows
with a prefill of the prompt and then one cached decode step per continuation token.
"""
import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT_TEXT = "<|im_start|>user\nthe cat is on the mat<|im_end|>\n"
CONTINUATION = [3, 97, 200, 150, 11, 42]


def main() -> None:
    root, out = sys.argv[1], sys.argv[2]
    result = {
        "generator": f"torch {torch.__version__}, transformers {transformers.__version__}",
        "note": "next-token logits, float32, eager attention; see scripts/reference_logits.py",
        "models": {},
    }
    torch.manual_seed(0)
    for arch in ["qwen3", "llama"]:
        path = f"{root}/{arch}"
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager"
        )
        model.eval()
        prompt = tok(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + CONTINUATION])
        with torch.no_grad():
            logits = model(ids).logits[0]
        rows = logits[len(prompt) - 1 :].tolist()
        result["models"][arch] = {
            "prompt_text": PROMPT_TEXT,
            "prompt": prompt,
            "continuation": CONTINUATION,
            "logits": [[round(x, 6) for x in r] for r in rows],
        }
        print(arch, "prompt tokens", len(prompt), "rows", len(rows))
    with open(out, "w") as f:
        json.dump(result, f)
        f.write("\n")


if __name__ == "__main__":
    main()
