#!/usr/bin/env bash
# The prepared GPU check for a session that is lent a device (device tool: one command, ~10 min):
#   run: bash benchmarks/gpu_suite.sh     (figures land in $OUT, else benchmarks/results/)
# Needs only torch on the GPU box: the benchmarks import neither Ray nor MLflow, and skillearn
# is used from the working tree. Each part has its own time limit so one slow part cannot eat
# the slot; a part that fails is reported and the next one still runs.
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
            torch.cuda.get_device_name(0))' | tee "$out/gpu_environment.txt"
status=0
run() {  # run LIMIT_S NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/gpu_$name.log" || { echo "!! $name failed"; status=1; }
}
run 200 step_ratio_digits python -m benchmarks.step_ratio --device cuda --sizes digits \
    --json "$out/gpu_step_ratio_digits.json"
run 200 step_ratio_cifar python -m benchmarks.step_ratio --device cuda --sizes cifar64,cifar256 \
    --skills darts --json "$out/gpu_step_ratio_cifar.json"
run 90 fast_paths python -m benchmarks.fast_paths --device cuda --size digits/full8 \
    --json "$out/gpu_fast_paths.json"
run 120 compile_probe python -m benchmarks.compile_probe --device cuda --size cifar64 \
    --steps 20 --json "$out/gpu_compile_probe.json"
exit $status
