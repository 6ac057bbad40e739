#!/usr/bin/env bash
# Side-by-side CPU benchmark of the embedded Whisper and embeddings against references
# measured in the same run: faster-whisper (CTranslate2) for speech, sentence-transformers
# (PyTorch) for embeddings. Manual benchmark; CI does not run it.
#
#   crates/cocoon-engine/scripts/bench_speech_embeddings.sh
#   EMBED_LAYERS=4 REPEAT=2 crates/cocoon-engine/scripts/bench_speech_embeddings.sh
#
# Steps:
#  1. A venv under $WORK with faster-whisper, sentence-transformers, transformers and torch
#     from PyPI (torch also converts the Whisper checkpoint for CTranslate2).
#  2. `examples/bench_speech.rs write`: random-weight checkpoints of real shapes (Whisper
#     tiny: d_model 384, 4 + 4 layers, 6 heads, vocab 51865; Qwen3-Embedding-0.6B with
#     EMBED_LAYERS of its 28 layers), a 30 s WAV and 16 texts of 120 characters.
#  3. Ours (`bench_speech run`) then the references (`bench_speech_reference.py`), one after
#     the other, best of REPEAT after a warm-up; THREADS threads for the references (candle
#     uses every core).
#  4. A Markdown table with both and the ratios (ours / reference, as speed).
#
# Environment: WORK (default <target>/bench-speech), EMBED_LAYERS (28), REPEAT (3),
# THREADS (the number of cores), VENV (default $WORK/venv).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
WORK=${WORK:-$TARGET_DIR/bench-speech}
EMBED_LAYERS=${EMBED_LAYERS:-28}
REPEAT=${REPEAT:-3}
THREADS=${THREADS:-$(nproc)}
VENV=${VENV:-$WORK/venv}
PY=$VENV/bin/python
mkdir -p "$WORK"
log() { echo "[bench] $*" >&2; }

if ! "$PY" -c "import faster_whisper, sentence_transformers, transformers, torch" 2>/dev/null; then
  log "installing faster-whisper, sentence-transformers, transformers, torch into $VENV"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q faster-whisper sentence-transformers transformers torch safetensors
fi

log "building the cocoon-engine side"
cargo build -q --release -p cocoon-engine --example bench_speech --manifest-path "$REPO/Cargo.toml"
BIN=$TARGET_DIR/release/examples/bench_speech
MODELS=$WORK/models-$EMBED_LAYERS
if [ ! -f "$MODELS/texts.json" ]; then
  log "writing the checkpoints into $MODELS"
  rm -rf "$MODELS"
  "$BIN" write "$MODELS" "$EMBED_LAYERS" >/dev/null
fi

log "cocoon-engine"
"$BIN" run "$MODELS" "$REPEAT" > "$WORK/ours.jsonl"
log "references"
PATH=$VENV/bin:$PATH "$PY" "$REPO/crates/cocoon-engine/scripts/bench_speech_reference.py" \
  "$MODELS" "$THREADS" "$REPEAT" 2>"$WORK/reference.log" > "$WORK/reference.jsonl"

"$PY" - "$WORK/ours.jsonl" "$WORK/reference.jsonl" "$EMBED_LAYERS" "$THREADS" <<'EOF'
import json, sys
ours = {r["workload"]: r for r in map(json.loads, open(sys.argv[1]))}
refs = {r["workload"]: r for r in map(json.loads, open(sys.argv[2]))}
layers, threads = sys.argv[3], sys.argv[4]
rows = [
    ("whisper", "Whisper tiny shape: 30 s of audio, 32 tokens decoded",
     lambda r: f"{r['audio_seconds'] / r['seconds']:.1f} audio s/s"),
    ("whisper_encoder", "… of which log-mel + encoder",
     lambda r: f"{r['audio_seconds'] / r['seconds']:.1f} audio s/s"),
    ("embeddings", f"Qwen3-Embedding-0.6B shape ({layers} layers): 16 texts",
     lambda r: f"{r['tokens'] / r['seconds']:.0f} tokens/s"),
]
print(f"| workload | cocoon-engine | reference ({threads} threads) | ours / reference |")
print("|---|---|---|---|")
for key, name, rate in rows:
    o, r = ours[key], refs[key]
    print(f"| {name} | {rate(o)} ({o['seconds']:.3f} s) | {rate(r)} ({r['seconds']:.3f} s, "
          f"{r['engine']}) | {r['seconds'] / o['seconds']:.2f}× |")
EOF
