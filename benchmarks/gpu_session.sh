#!/usr/bin/env bash
# The GPU checks of one device session, as one script (issues 7 and 8): GPU tests, the throughput
# benchmark (fp32, bf16, torch.compile) and the ImageNet-LT-shaped ResNet-50 benchmark.
# Writes everything under ${OUT:-gpu-out}; run from the repository root.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
py=python3
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc
} > "$OUT/gpu_info.txt" 2>&1
cat "$OUT/gpu_info.txt"
step() {   # step NAME SECONDS CMD...: run with a time limit, keep stdout in $OUT/NAME, report
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name" 2>> "$OUT/stderr.txt"
  echo "== $name: rc=$? in $(( $(date +%s) - t0 ))s"
}
step pytest_gpu.txt 120 $py -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q
tail -3 "$OUT/pytest_gpu.txt"
step bench_cuda_fp32.json 120 $py -m major2minor bench --device cuda --repeats 20 --warmup 5
step bench_cuda_bf16.json 120 $py -m major2minor bench --device cuda --repeats 20 --warmup 5 --amp bf16
step imagenet_lt_synthetic.json 200 $py benchmarks/gpu_imagenet_lt_synthetic.py --stream-images 4096 --workers 12 --engine-epochs 1
step bench_cuda_compile.json 150 $py -m major2minor bench --device cuda --repeats 20 --warmup 5 --compile
$py - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ("bench_cuda_fp32.json", "bench_cuda_bf16.json", "bench_cuda_compile.json"):
    try:
        d = json.loads((out / name).read_text())
    except Exception as exc:
        print(name, "unreadable:", exc); continue
    print(name, d["device_name"], d["dtype"], "compile" if d["compile"] else "",
          {k: (v["seconds_per_batch"], v.get("translation_share")) for k, v in d["methods"].items()})
try:
    d = json.loads((out / "imagenet_lt_synthetic.json").read_text())
    print("imagenet-lt:", {k: d[k] for k in d if k in ("train_step", "m2m_step", "stream", "engine")})
except Exception as exc:
    print("imagenet-lt unreadable:", exc)
PY
tail -20 "$OUT/stderr.txt"
