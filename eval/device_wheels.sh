#!/usr/bin/env bash
# Fills .whl/ with what eval/device_check.sh installs on the GPU machine, which has no registry: vtc's own wheel
# and the transformers this venv resolved (the device image's is older), with the packages it needs that the
# image lacks or holds at too old a version. Versions come from the active venv, so the GPU runs what CI runs.
# Run from the repository root with the dev venv active; then call the device tool with carry [".whl"].
set -euo pipefail
grep -qx "/.whl/" .git/info/exclude || echo "/.whl/" >> .git/info/exclude
rm -rf .whl && mkdir .whl
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
for name in transformers huggingface_hub kernels httpx2 httpcore2 truststore click tomlkit regex hf-xet; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$(version "$name")"
done
python -m pip wheel -q --no-deps --no-build-isolation -w .whl .
du -sh .whl
