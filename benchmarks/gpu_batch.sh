#!/usr/bin/env bash
# The batch benchmark on a CUDA machine with real-dimension checkpoints (docs/performance.md,
# "On a GPU"): writes the random-weight GGUF pair with benchmarks/real_shapes_gguf.py, then
# runs benchmarks/bench_batch.py on it (the bare engine and the batch engine at each batch).
#
#   bash benchmarks/gpu_batch.sh TEMPLATE_DIR [OUT_DIR]
#
# TEMPLATE_DIR: made by `python benchmarks/real_shapes_gguf.py template --model T.gguf
# --mmproj M.gguf --out DIR` from any qwen35 GGUF pair (the tiny test checkpoint's will do):
# the tokenizer and chat template, 11 MB, no weights. Needs llama-cpp-python built with CUDA
# (CMAKE_ARGS="-DGGML_CUDA=on"), numpy, Pillow, pypdfium2 and llama.cpp's gguf-py importable.
# Settings by environment: VARIANTS (default "9B 0.8B"), QUANT (Q8_0), BATCHES (1,2,4,8,16),
# PAGES (16), MAX_TOKENS (128), IMAGE_TOKENS (256), REPEATS (1).
set -euo pipefail
TEMPLATE=${1:?usage: gpu_batch.sh TEMPLATE_DIR [OUT_DIR]}
OUT=${2:-/tmp/qwenocr-gpu-batch}
QUANT=${QUANT:-Q8_0}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
for VARIANT in ${VARIANTS:-9B 0.8B}; do
    python3 benchmarks/real_shapes_gguf.py write --variant "$VARIANT" --quant "$QUANT" \
        --template "$TEMPLATE" --out "$OUT/$VARIANT" >"$OUT/$VARIANT.paths.json"
    python3 benchmarks/bench_batch.py --no-tiny \
        --gguf "$OUT/$VARIANT/qwen3.5-$VARIANT-$QUANT.gguf" --mmproj "$OUT/$VARIANT/mmproj-$VARIANT-F16.gguf" \
        --name "$VARIANT real dims $QUANT" --batches "${BATCHES:-1,2,4,8,16}" --pages "${PAGES:-16}" \
        --max-tokens "${MAX_TOKENS:-128}" --image-tokens "${IMAGE_TOKENS:-256}" --repeats "${REPEATS:-1}" \
        --json "$OUT/batch-$VARIANT.json"
    rm -rf "${OUT:?}/$VARIANT"  # the next variant needs the disk more than this one's weights
done
