#!/usr/bin/env bash
# Run ON THE GPU MACHINE (the `device` tool), after prepare.sh here:
#     run(command="bash benchmarks/device/check.sh", carry=[".devcarry"], timeout_s=560)
# One call, about 7-9 minutes, every result under $OUT (at most 8 files come back):
#   env.txt           GPU, torch and torchvision versions
#   tests-gpu.log     tests/test_cuda.py, the torchvision tests (real torchvision, weights made
#                     in the test) and the efficientnet-lite0 tests (classify runs on CUDA)
#   imagenet-100.json benchmarks/imagenet.py on CUDA, population 100, direct + cppn
#   imagenet-400.txt  the paper's schedule: CPPN, population 400, 200 timed generations,
#                     extrapolated to 5,000 generations
#   torchvision.txt   the same benchmark on torchvision alexnet / resnet50 (random weights
#                     written to the hub cache: throughput only, no downloads there)
#   budget.json       benchmarks/imagenet_budget.py on CUDA: the paper's settings and curiosity
#                     selection to 50k evaluations each (the sample-efficiency table's rows)
#   tests-all.log     the whole suite (last: it is the part that may be cut by the timeout)
set -u
OUT=${OUT:-/tmp/evofool-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_HOME=/tmp/torch-home
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .devcarry/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
# The tests look for the shared data beside the checkout, as on the development machine.
[ -e ../shared/data ] || { mkdir -p ../shared && ln -s "$PWD/.devcarry/data" ../shared/data; }

{ nvidia-smi -L; python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"; nproc; } \
    2>&1 | tee "$OUT/env.txt"

timeout 180 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/models/test_torchvision.py \
    tests/models/test_efficientnet.py tests/test_imagenet_run.py 2>&1 | tee "$OUT/tests-gpu.log"

timeout 75 python3 benchmarks/imagenet.py --devices cuda --population 100 --generations 51 --json \
    2>&1 | tee "$OUT/imagenet-100.json"
timeout 120 python3 benchmarks/imagenet.py --devices cuda --population 400 --generations 201 \
    --encodings cppn --extrapolate 5000 2>&1 | tee "$OUT/imagenet-400.txt"

python3 - <<'PY'
# Random weights where torch hub keeps downloads: the torchvision benchmark needs no network.
import pathlib, torch, torchvision as tv
for name in ("alexnet", "resnet50"):
    w = tv.models.get_model_weights(name).DEFAULT
    path = pathlib.Path(torch.hub.get_dir()) / "checkpoints" / pathlib.Path(w.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tv.models.get_model(name, weights=None).state_dict(), path)
PY
for m in alexnet resnet50; do
    timeout 45 python3 benchmarks/imagenet.py --model torchvision:$m --devices cuda --population 400 \
        --generations 31 --encodings cppn --extrapolate 5000 2>&1
done | tee "$OUT/torchvision.txt"

# The budget benchmark's first rows on the GPU (runs as ordinary run folders; --no-run reads them).
timeout 150 python3 benchmarks/imagenet_budget.py --budget 50000 --variants paper curiosity --parallel 1 \
    --root /tmp/budget --at 20000 50000 > "$OUT/budget-runs.log" 2>&1
python3 benchmarks/imagenet_budget.py --budget 50000 --variants paper curiosity --root /tmp/budget \
    --at 20000 50000 --no-run --json > "$OUT/budget.json" 2>&1

# Whatever is left of a 560 s call (bash's SECONDS counts since the script started).
LEFT=$((545 - SECONDS)); [ "$LEFT" -gt 30 ] || LEFT=30
timeout "$LEFT" python3 -m pytest -q -p no:cacheprovider -n 8 tests 2>&1 | tee "$OUT/tests-all.log"
echo "check.sh done in $SECONDS s"
