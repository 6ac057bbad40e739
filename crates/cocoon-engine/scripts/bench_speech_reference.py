#!/usr/bin/env python3
"""The reference half of bench_speech_embeddings.sh: faster-whisper (CTranslate2) and
sentence-transformers (PyTorch) on the checkpoints `examples/bench_speech.rs write` made,
with the same workloads: a 30 s WAV transcribed in English, greedy, no timestamps, exactly
DECODE_TOKENS tokens (<|endoftext|> and the other specials are suppressed, as listed in the
checkpoint's config); the texts
of texts.json embedded in one call. Best of REPEAT after a warm-up; one JSON line each.

    python bench_speech_reference.py DIR THREADS [REPEAT]
"""
import json
import os
import subprocess
import sys
import time

DECODE_TOKENS = 32


def best_of(repeat, f):
    f()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def whisper(root, threads, repeat):
    import faster_whisper

    ct2 = f"{root}/whisper-ct2"
    if not os.path.exists(f"{ct2}/model.bin"):
        subprocess.run(
            ["ct2-transformers-converter", "--model", f"{root}/whisper", "--output_dir", ct2,
             "--copy_files", "tokenizer.json", "--quantization", "float32", "--force"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    config = json.load(open(f"{root}/whisper/config.json"))
    model = faster_whisper.WhisperModel(
        ct2, device="cpu", compute_type="float32", cpu_threads=threads, num_workers=1
    )

    tokenizer = model.hf_tokenizer
    prompt = [
        tokenizer.token_to_id(t)
        for t in ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    ]

    # faster-whisper's transcribe() runs these steps for a 30 s clip (decode and resample,
    # log-mel, encode, greedy generation); they are called directly so that the number of
    # generated tokens is exact: CTranslate2 5.x's Whisper returns max_length / 2 tokens
    # here (max_length counting the prompt), and transcribe() drops one from its segment.
    def once():
        audio = faster_whisper.decode_audio(f"{root}/audio.wav")
        features = model.feature_extractor(audio)[:, :3000]
        encoded = model.encode(features)
        result = model.model.generate(
            encoded,
            [prompt],
            max_length=2 * DECODE_TOKENS,
            suppress_tokens=config["suppress_tokens"],
            suppress_blank=False,
            beam_size=1,
        )
        tokens = len(result[0].sequences_ids[0])
        if tokens != DECODE_TOKENS:
            raise SystemExit(f"faster-whisper decoded {tokens} tokens, not {DECODE_TOKENS}")

    engine = f"faster-whisper {faster_whisper.__version__}"
    seconds = best_of(repeat, once)
    print(json.dumps({"workload": "whisper", "seconds": seconds, "audio_seconds": 30,
                      "decode_tokens": DECODE_TOKENS, "engine": engine}))

    def encoder_only():
        audio = faster_whisper.decode_audio(f"{root}/audio.wav")
        model.encode(model.feature_extractor(audio)[:, :3000])

    seconds = best_of(repeat, encoder_only)
    print(json.dumps({"workload": "whisper_encoder", "seconds": seconds, "audio_seconds": 30,
                      "engine": engine}))


def embeddings(root, threads, repeat):
    import sentence_transformers
    import torch

    torch.set_num_threads(threads)
    model = sentence_transformers.SentenceTransformer(f"{root}/embedding", device="cpu")
    texts = json.load(open(f"{root}/texts.json"))
    seconds = best_of(repeat, lambda: model.encode(texts, batch_size=len(texts)))
    tokens = sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
    print(json.dumps({"workload": "embeddings", "seconds": seconds, "texts": len(texts),
                      "tokens": tokens,
                      "engine": f"sentence-transformers {sentence_transformers.__version__}, "
                                f"torch {torch.__version__}"}))


def main():
    root, threads = sys.argv[1], int(sys.argv[2])
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    whisper(root, threads, repeat)
    embeddings(root, threads, repeat)


if __name__ == "__main__":
    main()
