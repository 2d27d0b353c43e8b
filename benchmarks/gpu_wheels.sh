#!/usr/bin/env bash
# Wheels the GPU check needs that the GPU machine lacks (TRL and its small pure-Python
# dependencies; the machine has torch, transformers, peft, accelerate and pyarrow), into
# benchmarks/wheels/ (git-ignored, about 3 MB), to carry there:
#   bash benchmarks/gpu_wheels.sh
#   run: python benchmarks/gpu_check.py --device cuda --wheels benchmarks/wheels --out "$OUT"
#        (carry: benchmarks/wheels)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
rm -rf wheels && mkdir wheels
"$PY" -m pip download -q --no-deps -d wheels "trl==1.16.0" datasets dill multiprocess xxhash \
  fsspec pandas 2> >(grep -v "is ignored: it is neither" >&2)
du -sh wheels
