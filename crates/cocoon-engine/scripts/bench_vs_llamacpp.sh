#!/usr/bin/env bash
# Side-by-side CPU benchmark: cocoon-engine (candle) vs llama.cpp on the same GGUF files.
# Manual benchmark; CI does not run it.
#
#   crates/cocoon-engine/scripts/bench_vs_llamacpp.sh
#   FORMATS=f32,q8_0,q4k THREADS="1 2" LAYERS=28 PROMPT=128 DECODE=32 crates/cocoon-engine/scripts/bench_vs_llamacpp.sh
#
# Steps:
#  1. Installs llama.cpp from PyPI: `llama-cpp-python` (pinned below), which compiles the
#     llama.cpp it vendors with cmake for this CPU (GGML_NATIVE). Debian bookworm has no
#     llama.cpp package, so cmake comes from apt-get (when missing) and the build goes into a
#     venv under $WORK. Nothing else is downloaded.
#  2. Builds `examples/bench_gguf.rs` and writes Qwen3-0.6B-shaped random-weight GGUFs
#     (hidden 1024, 28 layers, 16/8 heads, head_dim 128, intermediate 3072, vocab 151936)
#     with `cocoon_engine::testing::write_gguf_model`, plus the tokenizer.ggml.* keys that
#     llama.cpp requires (see the example), and tokenizer.json beside them.
#  3. For each format and thread count, measures both engines on the same file, one after
#     the other: prefill = one forward pass over PROMPT tokens; decode = a 1-token prompt
#     then DECODE single-token steps through the KV cache (DECODE+1 forward passes, logits of
#     the last position each time). Same token ids in both. Best of REPEAT runs.
#     Threads: RAYON_NUM_THREADS for candle, n_threads/n_threads_batch for llama.cpp.
#     Before that, checks that both engines agree on the logits of the same file.
#  4. Prints one Markdown table with both and the ratios (ours / llama.cpp).
#
# Environment:
#   WORK       scratch dir (venv, GGUFs, logs); default $CARGO_TARGET_DIR/bench-vs-llamacpp
#              or <repo>/target/bench-vs-llamacpp
#   FORMATS    comma list of f32, f16, bf16, q8_0, q4k (default f32,q8_0,q4k); candle
#              dequantizes F16/BF16 GGUF weights to F32, llama.cpp keeps them
#   THREADS    space-separated thread counts (default "1 2")
#   LAYERS PROMPT DECODE REPEAT   model depth and workload (28, 128, 32, 2)
#   RUSTFLAGS  passed to cargo as usual (e.g. "-C target-cpu=native")
#   VENV (default $WORK/venv), LLAMA_CPP_PYTHON_VERSION (default 0.3.36),
#   LLAMA_CMAKE_ARGS (extra cmake args)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
WORK=${WORK:-$TARGET_DIR/bench-vs-llamacpp}
FORMATS=${FORMATS:-f32,q8_0,q4k}
THREADS=${THREADS:-"1 2"}
LAYERS=${LAYERS:-28}
PROMPT=${PROMPT:-128}
DECODE=${DECODE:-32}
REPEAT=${REPEAT:-2}
LCP_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
VENV=${VENV:-$WORK/venv}
PY=$VENV/bin/python
mkdir -p "$WORK"
log() { echo "[bench] $*" >&2; }

# 1. llama.cpp (llama-cpp-python from PyPI, compiled here for a CPU-only build).
if ! "$PY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LCP_VERSION')" 2>/dev/null; then
  if ! command -v cmake >/dev/null; then
    log "installing cmake (apt-get)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q cmake
  fi
  [ -x "$PY" ] || python3 -m venv "$VENV"
  log "building llama-cpp-python==$LCP_VERSION (several minutes; log: $WORK/llama-build.log)"
  CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF ${LLAMA_CMAKE_ARGS:-}" \
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$VENV/bin/pip" install -v "llama-cpp-python==$LCP_VERSION" >"$WORK/llama-build.log" 2>&1 \
    || { tail -30 "$WORK/llama-build.log"; exit 1; }
fi

# 2. Our engine's helper and the GGUF files.
log "building examples/bench_gguf (release)"
(cd "$REPO" && cargo build --release -q -p cocoon-engine --example bench_gguf)
BIN=$TARGET_DIR/release/examples/bench_gguf
MODELS=$WORK/models-$LAYERS
mkdir -p "$MODELS"
IFS=, read -r -a FMTS <<<"$FORMATS"
for f in "${FMTS[@]}"; do
  if [ ! -s "$MODELS/qwen3-0.6b-shape-$f.gguf" ]; then
    log "writing $f GGUF ($LAYERS layers)"
    "$BIN" write "$MODELS" "$f" "$LAYERS" >/dev/null
  fi
done

# 3. Measurements.
LLAMA_BENCH=$WORK/llama_bench.py
cat >"$LLAMA_BENCH" <<'EOF'
import sys, time
import llama_cpp

path, threads, prompt_len, decode, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# The same token ids as benches/engine.rs and examples/bench_gguf.rs.
prompt = [(i * 37) % 270 for i in range(prompt_len)]
cont = [(i * 11) % 270 for i in range(decode)]
t = time.perf_counter()
m = llama_cpp.Llama(model_path=path, n_ctx=max(512, prompt_len + decode + 8), n_batch=512, n_ubatch=512,
                    n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
load_s = time.perf_counter() - t
m.reset(); m.eval(prompt[:8])  # warm-up
prefill_s = decode_s = float("inf")
for _ in range(max(1, repeat)):
    m.reset()
    t = time.perf_counter(); m.eval(prompt); prefill_s = min(prefill_s, time.perf_counter() - t)
    m.reset()
    t = time.perf_counter()
    m.eval(prompt[:1])
    for tok in cont:
        m.eval([tok])
    decode_s = min(decode_s, time.perf_counter() - t)
print(f"prefill_tps={prompt_len / prefill_s:.3f} decode_tps={(decode + 1) / decode_s:.3f} load_s={load_s:.2f} threads={threads}")
EOF

# Both engines must compute the same model: compare the last-position logits of an 8-token
# prompt (llama.cpp keeps its KV cache in F16, so F32 agrees to ~1e-4, not bit for bit).
LOGITS_CHECK=$WORK/logits_check.py
cat >"$LOGITS_CHECK" <<'EOF'
import json, subprocess, sys
import numpy as np
import llama_cpp

path, binary, n = sys.argv[1], sys.argv[2], 8
prompt = [(i * 37) % 270 for i in range(n)]
m = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, logits_all=True, verbose=False)
m.eval(prompt)
theirs = np.array(m.scores[n - 1], dtype=np.float64)
ours = np.array(json.loads(subprocess.check_output([binary, "logits", path, str(n)])), dtype=np.float64)
d = np.abs(ours - theirs)
top = len(set(np.argsort(-ours)[:5]) & set(np.argsort(-theirs)[:5]))
print(f"max|dlogit|={d.max():.2e} (max|logit| {np.abs(theirs).max():.2f}), argmax equal: {ours.argmax() == theirs.argmax()}, top-5 overlap {top}/5")
EOF
CHECKS=()
for f in "${FMTS[@]}"; do
  c=$("$PY" "$LOGITS_CHECK" "$MODELS/qwen3-0.6b-shape-$f.gguf" "$BIN" 2>>"$WORK/llama.log")
  log "logits $f: $c"
  CHECKS+=("$f: $c")
done

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
ROWS=()
for f in "${FMTS[@]}"; do
  file=$MODELS/qwen3-0.6b-shape-$f.gguf
  for t in $THREADS; do
    log "$f, $t thread(s): cocoon-engine"
    ours=$(RAYON_NUM_THREADS=$t BENCH_REPEAT=$REPEAT "$BIN" run "$file" "$PROMPT" "$DECODE" 2>>"$WORK/engine.log")
    log "  $ours"
    log "$f, $t thread(s): llama.cpp"
    theirs=$(OMP_NUM_THREADS=$t "$PY" "$LLAMA_BENCH" "$file" "$t" "$PROMPT" "$DECODE" "$REPEAT" 2>>"$WORK/llama.log")
    log "  $theirs"
    ROWS+=("$f|$t|$(field prefill_tps "$ours")|$(field prefill_tps "$theirs")|$(field decode_tps "$ours")|$(field decode_tps "$theirs")")
  done
done

# 4. The table.
echo
echo "Qwen3-0.6B shape, $LAYERS layers, random weights; prompt $PROMPT tokens, decode $DECODE tokens; best of $REPEAT;"
echo "llama.cpp via llama-cpp-python $LCP_VERSION ($("$PY" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())' 2>/dev/null));"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
echo
echo "| GGUF | threads | prefill tok/s ours | prefill tok/s llama.cpp | prefill ratio | decode tok/s ours | decode tok/s llama.cpp | decode ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for r in "${ROWS[@]}"; do
  IFS='|' read -r f t po pl do_ dl <<<"$r"
  awk -v f="$f" -v t="$t" -v po="$po" -v pl="$pl" -v do_="$do_" -v dl="$dl" 'BEGIN {
    printf "| %s | %s | %.1f | %.1f | %.2f× | %.2f | %.2f | %.2f× |\n", f, t, po, pl, (pl > 0 ? po / pl : 0), do_, dl, (dl > 0 ? do_ / dl : 0) }'
done
echo
echo "Logits check (last position of an 8-token prompt, ours vs llama.cpp):"
for c in "${CHECKS[@]}"; do echo "- $c"; done
