#!/usr/bin/env python3
"""Reference values for the tiny Whisper and Qwen3-Embedding test checkpoints, computed
with PyTorch + transformers (Whisper) and sentence-transformers (embeddings).

This is the independent implementation that tests/reference.rs compares candle against.
It is NOT needed in CI: its output is committed as tests/data/reference_whisper.json and
tests/data/reference_embeddings.json. Regenerate them (only if the fixture generator in
src/testing.rs changes) with:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch transformers safetensors sentence-transformers
    cargo run -p cocoon-engine --example write_fixture -- /tmp/cocoon-fixtures
    /tmp/refvenv/bin/python crates/cocoon-engine/scripts/reference_speech_embeddings.py \\
        /tmp/cocoon-fixtures crates/cocoon-engine/tests/data

Whisper: a synthetic 1.5 s signal (the formula is repeated in the Rust test) goes through
transformers' WhisperFeatureExtractor (log-mel, 30 s padding), the encoder, and the decoder
fed <|startoftranscript|><|en|><|transcribe|><|notimestamps|> and three text tokens. Slices
of the mel and encoder output, their absolute sums, and every row of logits are recorded,
with the model as trained (exact GELU) and again with the tanh approximation of GELU that
candle's Whisper uses, so the test can tell that approximation from any other difference.

Embeddings: SentenceTransformer(dir) reads modules.json and 1_Pooling (last token,
normalised) as it does for Qwen3-Embedding; each text is encoded alone.
"""
import json
import math
import sys

import numpy as np
import sentence_transformers
import torch
import transformers
from tokenizers import Tokenizer
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

RATE = 16000
SECONDS = 1.5
MEL_COLUMNS = [(0, 8), (146, 154)]
ENCODER_ROWS = [(0, 8), (70, 80)]
TEXTS = ["hello world", "the cat is on the mat", "a"]


def signal() -> np.ndarray:
    n = int(RATE * SECONDS)
    t = np.arange(n, dtype=np.float64) / RATE
    x = 0.5 * np.sin(2 * math.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * math.pi * 3 * t))
    x += 0.2 * np.sin(2 * math.pi * 1234 * t)
    return x.astype(np.float32)


def rounded(rows):
    return [[round(float(x), 6) for x in r] for r in rows]


def whisper(root: str) -> dict:
    path = f"{root}/whisper"
    tok = Tokenizer.from_file(f"{path}/tokenizer.json")
    tokens = [
        tok.token_to_id(t)
        for t in ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    ] + [72, 101, 108]
    extractor = WhisperFeatureExtractor(feature_size=80)
    mel = extractor(signal(), sampling_rate=RATE, return_tensors="pt").input_features
    def run(activation: str):
        model = WhisperForConditionalGeneration.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager", activation_function=activation
        )
        model.eval()
        with torch.no_grad():
            encoder = model.model.encoder(mel).last_hidden_state
            logits = model(
                encoder_outputs=(encoder,), decoder_input_ids=torch.tensor([tokens])
            ).logits[0]
        return encoder[0], logits

    encoder, logits = run("gelu")
    # candle's Whisper uses the tanh approximation of GELU: the same model with it.
    encoder_tanh, logits_tanh = run("gelu_pytorch_tanh")
    mel = mel[0]
    return {
        "seconds": SECONDS,
        "tokens": tokens,
        "mel_columns": [
            {"start": a, "rows": rounded(mel[:, a:b].T.tolist())} for a, b in MEL_COLUMNS
        ],
        "mel_abs_sum": float(mel.abs().sum()),
        "encoder_rows": [
            {"start": a, "rows": rounded(encoder[a:b].tolist())} for a, b in ENCODER_ROWS
        ],
        "encoder_abs_sum": float(encoder.abs().sum()),
        "logits": rounded(logits.tolist()),
        "tanh_gelu": {
            "encoder_rows": [
                {"start": a, "rows": rounded(encoder_tanh[a:b].tolist())}
                for a, b in ENCODER_ROWS
            ],
            "logits": rounded(logits_tanh.tolist()),
        },
    }


def embeddings(root: str) -> dict:
    model = sentence_transformers.SentenceTransformer(f"{root}/qwen3-embedding", device="cpu")
    return {
        "texts": TEXTS,
        "embeddings": [rounded(model.encode([t], normalize_embeddings=False))[0] for t in TEXTS],
    }


def main() -> None:
    root, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    versions = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}"
    )
    for name, values in [("whisper", whisper(root)), ("embeddings", embeddings(root))]:
        values["generator"] = versions
        values["note"] = "float32; see scripts/reference_speech_embeddings.py"
        with open(f"{out}/reference_{name}.json", "w") as f:
            json.dump(values, f)
            f.write("\n")
        print(name, "written")


if __name__ == "__main__":
    main()
