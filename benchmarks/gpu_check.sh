#!/usr/bin/env bash
# One prepared GPU session (the `device` tool lends a GPU for ~15 minutes): the CUDA tests,
# then the fast-sampler table (naive / eager / CUDA graph) and zoo bench of the sampled families.
# Everything lands in ${OUT:-benchmarks/results/gpu}; nothing here downloads anything.
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
set -uo pipefail
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>&1
"$py" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -30 > "$out/test_gpu.txt"
"$py" benchmarks/fast_samplers.py --device cuda --repeats 5 --json "$out/fast-samplers-cuda.json" \
    > "$out/fast-samplers-cuda.txt" 2>&1
for m in pixelcnn pixelcnn-md lstm gpt-shakespeare ddm; do
    "$py" -m genzoo bench "$m" --device cuda --preset book --repeats 3 --n 16 \
        --json "$out/bench-$m-cuda.json" > "$out/bench-$m-cuda.txt" 2>&1
done
tail -n 3 "$out"/*.txt
