#!/usr/bin/env bash
# The checks a session lent a GPU runs in one call of the device tool (its 15 minutes are shared by all tries):
#   1. the correctness oracles on CUDA, float32 and bfloat16, sdpa, every tiny family (eval/device_oracles.py);
#   2. prefill / TTFT / decode at Qwen2.5-VL-7B's shape, 128 frames at 392 px = 12,544 visual tokens, bfloat16;
#   3. the 0.5B-shaped model at 3,136 tokens, every prefill method (the CPU tables' shape), decode, batches, DivPrune.
# Everything lands in $OUT/results.tgz (refreshed after each part, so a part cut by its time limit loses only
# itself) and $OUT/log.txt. Wheels carried in .whl/ (vtc's own wheel and the transformers CI resolves, with
# what it needs) are installed first: the device image has an older transformers and no vtc.
# Dry run on a CPU (small shapes, same method lists): VTC_DEVICE_DRY=1 OUT=/tmp/dry bash eval/device_check.sh
set -u
REPO=$(pwd)
OUT=${OUT:-/tmp/vtc-device-out}
RES=/tmp/vtc-device-results
rm -rf "$RES" && mkdir -p "$RES/oracles" "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec > >(tee -a "$OUT/log.txt") 2>&1

if [ "${VTC_DEVICE_DRY:-0}" = 1 ]; then
  DEVICE=cpu; BIG=0.5b; BIG_FRAMES=4; BIG_SIZE=112; SMALL_FRAMES=4; SMALL_SIZE=112; DECODE=4; REPEATS=1; DIVPRUNE=196
  ORACLE_FAMILIES="qwen2_5_vl smolvlm"; LIMIT_ORACLES=600; LIMIT_BIG=600; LIMIT_SMALL=900
  PY=python
else
  DEVICE=cuda; BIG=7b; BIG_FRAMES=128; BIG_SIZE=392; SMALL_FRAMES=32; SMALL_SIZE=392; DECODE=128; REPEATS=3; DIVPRUNE=8232
  ORACLE_FAMILIES=""; LIMIT_ORACLES=150; LIMIT_BIG=230; LIMIT_SMALL=170
  PY=python3
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
# vtc from its wheel (patches/ and eval/synth are mapped into it), eval/ and tests/ from the checkout.
export PYTHONPATH=/tmp/site:$REPO
mkdir -p /tmp/vtc-run && cd /tmp/vtc-run || exit 1
pack() { tar czf "$OUT/results.tgz" -C "$RES" . ; echo "== packed after $1 ($(date +%T))"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import torch, transformers, vtc; print('torch', torch.__version__, 'transformers', transformers.__version__, 'vtc', vtc.__file__)"
} | tee "$RES/environment.txt"

echo "== 1. oracles ($(date +%T))"
FAMILIES=${ORACLE_FAMILIES:-$($PY -c "from tests.builders import FAMILIES; print(*FAMILIES)")}
PIDS=()
for family in $FAMILIES; do
  OMP_NUM_THREADS=1 timeout "$LIMIT_ORACLES" $PY -m eval.device_oracles --device $DEVICE --families "$family" --out "$RES/oracles" \
    > "$RES/oracles/$family.log" 2>&1 &
  PIDS+=($!)
done
wait "${PIDS[@]}"  # not a bare wait: that would also wait for the tee behind exec
$PY -m eval.device_oracles --device $DEVICE --merge "$RES/oracles" --out "$RES/device_oracles_h200" \
  --command "bash eval/device_check.sh (python -m eval.device_oracles --families FAMILY, one process per family)"
pack oracles

echo "== 2. $BIG at $BIG_FRAMES frames x $BIG_SIZE px ($(date +%T))"
timeout "$LIMIT_BIG" $PY -m eval.efficiency --model $BIG --frames $BIG_FRAMES --size $BIG_SIZE --device $DEVICE \
  --dtype bfloat16 --parts prefill decode --repeats $REPEATS --warmup calls \
  --methods random dtd vidcom2 fastvid holitom divprune fastv@2 --retains 0.25 0.1 \
  --extra random:1.0 random:0.5 pyramiddrop:0.25 framefusion:0.25 visionzip:0.25 'visionzip(layer=7):0.25' \
  --decode-tokens $DECODE --decode-methods random dycoke-kv --decode-retains 0.25 0.1 \
  --note "H200, bfloat16, sdpa: Qwen2.5-VL-7B's shape at random weights (language model and the real 32-block tower)." \
  --out "$RES/efficiency_7b_h200"
pack "$BIG"

echo "== 3. 0.5b at $SMALL_FRAMES frames x $SMALL_SIZE px ($(date +%T))"
timeout "$LIMIT_SMALL" $PY -m eval.efficiency --model 0.5b --frames $SMALL_FRAMES --size $SMALL_SIZE --device $DEVICE \
  --dtype bfloat16 --parts prefill decode throughput divprune --repeats $REPEATS --warmup calls \
  --retains 1.0 0.5 0.25 0.1 --extra pyramiddrop:0.5 pyramiddrop:0.25 framefusion:0.5 framefusion:0.25 \
  visionzip:0.5 visionzip:0.25 dymu:0.5 \
  --decode-tokens $DECODE --decode-methods random fastv@2 pyramiddrop framefusion dycoke-kv --decode-retains 0.5 0.25 \
  --throughput-frames $SMALL_FRAMES --throughput-size 224 --batches 1 4 8 --divprune-tokens $DIVPRUNE \
  --note "H200, bfloat16, sdpa: the CPU tables' 0.5B shape, every method at every retain." \
  --out "$RES/efficiency_h200"
pack 0.5b
echo "== done ($(date +%T))"
