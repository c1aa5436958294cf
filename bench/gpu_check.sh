#!/usr/bin/env bash
# The GPU check, at most 5 minutes on one GPU: images/s of the trainer against a bare loop of
# the same model (bf16 autocast), peak GPU memory, whether a training step waits on the host,
# and total images/s with 1, 2 and 4 agents on that GPU through run_agent.sh.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: bench/gpu_check.sh [--cpu] [--gpu N] [--budget SECONDS] [--keep DIR]

  --cpu             tiny sizes on the CPU: the same code paths in seconds, no GPU figures
  --gpu N           the GPU to use (default 0)
  --budget SECONDS  stop with an error rather than run longer (default 290)
  --keep DIR        keep the agents' logs and runs in DIR (default: a temporary folder)
  -h, --help        this help

Run from anywhere; it runs the repository it belongs to. Prints lines starting [gpu_check].
USAGE
}

die() {
    echo "gpu_check.sh: error: $*" >&2
    exit 2
}

cpu=0
gpu=0
budget=290
keep=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --cpu) cpu=1; shift ;;
        --gpu) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--gpu needs a GPU index"; gpu=$2; shift 2 ;;
        --budget) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--budget needs seconds"; budget=$2; shift 2 ;;
        --keep) [[ $# -ge 2 && -n "$2" ]] || die "--keep needs a folder"; keep=$2; shift 2 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

deadline=$((SECONDS + budget))
# The time left, shared evenly by the $1 phases still to run.
share() {
    local left=$((deadline - SECONDS))
    [[ $left -gt 0 ]] || die "out of time (--budget $budget)"
    echo $((left / $1))
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [[ $cpu -eq 0 ]]; then
    command -v nvidia-smi >/dev/null 2>&1 || die "no nvidia-smi: no GPU here (use --cpu)"
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' ||
        die "torch sees no CUDA device (a CPU build of torch?); use --cpu"
fi

if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    work=$(cd "$keep" && pwd)
else
    work=$(mktemp -d)
fi
pids=()
# shellcheck disable=SC2329  # called by the trap below
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n "$keep" ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export WANDB_MODE=offline WANDB_SILENT=true WANDB_DIR="$work" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export VAE_SWEEPS_CACHE="$work/cache"  # the data cache: built by the first run, then shared
size=()
if [[ $cpu -eq 1 ]]; then
    size=(--cpu)
    # One thread per process: tiny models on shared cores run many times slower with more.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
if [[ $cpu -eq 0 ]]; then
    nvidia-smi -i "$gpu" --query-gpu=name,memory.total,driver_version --format=csv,noheader |
        sed 's/^/[gpu_check] /'
fi

# 1. The trainer against a bare loop in one process (a third of the time).
limit=$(share 3)
CUDA_VISIBLE_DEVICES=$gpu timeout "$limit" python bench/gpu_check.py "${size[@]}" loop ||
    die "the trainer/bare-loop check failed or ran out of time (--budget $budget)"

# 2. 1, 2 and 4 agents on the one GPU (or CPU agents with --cpu), one trial each.
phases=3
for agents in 1 2 4; do
    folder="$work/agents-$agents"
    mkdir -p "$folder"
    python bench/gpu_check.py "${size[@]}" sweep "$agents" "$folder"
    if [[ $cpu -eq 1 ]]; then
        where=(--gpus none --agents "$agents")
    else
        where=(--gpus "$gpu" --agents-per-gpu "$agents")
    fi
    limit=$(share $phases)
    started=$(date +%s%N)
    timeout "$limit" ./run_agent.sh --local "$folder/sweep.yaml" "${where[@]}" --count 1 --stagger 0 \
        --storage "sqlite:///$folder/sweeps.db" --logs "$folder/logs" >"$folder/run_agent.log" 2>&1 &
    pids=($!)
    status=0
    wait "${pids[0]}" || status=$?
    pids=()
    ms=$((($(date +%s%N) - started) / 1000000))
    phases=$((phases - 1))
    if [[ $status -ne 0 ]]; then
        tail -n 20 "$folder/run_agent.log" "$folder"/logs/*.log >&2 || true
        die "run_agent.sh with $agents agent(s) exited with status $status (logs above)"
    fi
    python bench/gpu_check.py "${size[@]}" agents "$folder" "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
done
[[ -z "$keep" ]] || echo "[gpu_check] logs and runs kept in $work"
