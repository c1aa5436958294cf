#!/usr/bin/env bash
# Start sweep agents on this machine: one per GPU (or several), or CPU agents; one log each.
# Stops all of its agents (and their runs) on Ctrl-C or SIGTERM, waits for them, and exits
# non-zero if any agent failed. SIGUSR1 (a scheduler's preemption warning) reaches every running
# trainer, which checkpoints and exits 75; the agents give their trials back and end; exit 75.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./run_agent.sh SWEEP_ID [options]      ENTITY/PROJECT/ID: a W&B sweep (wandb agent)
                                              ID (no slash): a local sweep (python -m sweeper agent)
       ./run_agent.sh --local FILE [options]  create a local sweep from FILE, then run it

Options:
  --gpus LIST|none      GPUs to use: indices or GPU-/MIG- UUIDs, comma-separated (default:
                        the inherited CUDA_VISIBLE_DEVICES, e.g. a SLURM job's GPUs; where
                        it is unset, every GPU that nvidia-smi -L lists)
  --agents-per-gpu K    agents per GPU, each with its own CUDA_VISIBLE_DEVICES (default 1)
  --agents N            agents in total: spread over the GPUs, or N CPU agents without GPUs
                        (default: one per GPU, or 1 CPU agent)
  --count N             runs per agent before it stops (default: until the sweep ends)
  --storage URL         local sweeps: Optuna storage (default sqlite:///outputs/sweeps.db)
  --name NAME           with --local: reopen the sweep of this name if the file is unchanged
  --max-retries N       with --local: retries of a lost or preempted trial before it ends
                        FAIL (default: python -m sweeper create's, 3)
  --stagger SECONDS     pause between agent starts (default 5; W&B agents started together
                        often get the same first configuration)
  --logs DIR            folder for the agents' logs (default logs)
  --dry-run             print the commands, start nothing
  -h, --help            this help
EOF
}

die() {
    echo "run_agent.sh: error: $*" >&2
    exit 2
}

sweep_id=""
local_file=""
gpus=""
gpus_given=0
per_gpu=""
agents=""
count=""
storage=""
name=""
max_retries=""
stagger=5
logs=logs
dry_run=0

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --local) need_value "$@"; local_file=$2; shift 2 ;;
        --gpus) need_value "$@"; gpus=$2; gpus_given=1; shift 2 ;;
        --agents-per-gpu) need_value "$@"; per_gpu=$2; shift 2 ;;
        --agents) need_value "$@"; agents=$2; shift 2 ;;
        --count) need_value "$@"; count=$2; shift 2 ;;
        --storage) need_value "$@"; storage=$2; shift 2 ;;
        --name) need_value "$@"; name=$2; shift 2 ;;
        --max-retries) need_value "$@"; max_retries=$2; shift 2 ;;
        --stagger) need_value "$@"; stagger=$2; shift 2 ;;
        --logs) need_value "$@"; logs=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [[ -z "$sweep_id" ]] || die "one sweep id only (got $sweep_id and $1)"
            sweep_id=$1
            shift
            ;;
    esac
done

positive_int() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1=$2: must be a positive integer"
}
[[ -n "$per_gpu" ]] && positive_int --agents-per-gpu "$per_gpu"
[[ -n "$agents" ]] && positive_int --agents "$agents"
[[ -n "$count" ]] && positive_int --count "$count"
[[ "$stagger" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--stagger=$stagger: must be a number of seconds"
[[ -n "$per_gpu" && -n "$agents" ]] && die "use --agents-per-gpu or --agents, not both"
if [[ -n "$local_file" ]]; then
    [[ -z "$sweep_id" ]] || die "give a sweep id or --local FILE, not both"
    [[ -f "$local_file" ]] || die "--local $local_file: no such file"
elif [[ -z "$sweep_id" ]]; then
    usage >&2
    exit 2
fi
[[ -n "$name" && -z "$local_file" ]] && die "--name goes with --local FILE"
[[ -n "$max_retries" && -z "$local_file" ]] && die "--max-retries goes with --local FILE"
[[ -z "$max_retries" || "$max_retries" =~ ^[0-9]+$ ]] || die "--max-retries=$max_retries: must be an integer >= 0"

# --- which devices: one CUDA_VISIBLE_DEVICES value per agent ("" = CPU) -----------------------
# A GPU is an index or a UUID as nvidia-smi -L prints it (GPU-..., MIG-...; MIG-GPU-.../g/c on
# old drivers).
gpu_entry='([0-9]+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)'
if [[ $gpus_given -eq 0 && -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    # The GPUs the scheduler gave this job: never one outside them, whatever nvidia-smi lists.
    gpus=$CUDA_VISIBLE_DEVICES
    [[ -z "$gpus" || "$gpus" =~ ^$gpu_entry(,$gpu_entry)*$ ]] ||
        die "inherited CUDA_VISIBLE_DEVICES=$gpus: expected indices or GPU-/MIG- UUIDs like 0,1 (or pass --gpus)"
    echo "[run_agent] GPUs from the inherited CUDA_VISIBLE_DEVICES: ${gpus:-none}"
elif [[ $gpus_given -eq 0 ]] && command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9][0-9]*\):.*/\1/p' | paste -sd, -) || gpus=""
fi
[[ "$gpus" == none ]] && gpus=""
[[ -z "$gpus" || "$gpus" =~ ^$gpu_entry(,$gpu_entry)*$ ]] ||
    die "--gpus=$gpus: expected a list like 0,1,3 or GPU-/MIG- UUIDs"
IFS=, read -r -a gpu_list <<<"$gpus"
devices=()
if [[ ${#gpu_list[@]} -gt 0 ]]; then
    if [[ -n "$agents" ]]; then
        for ((i = 0; i < agents; i++)); do devices+=("${gpu_list[i % ${#gpu_list[@]}]}"); done
    else
        for gpu in "${gpu_list[@]}"; do
            for ((k = 0; k < ${per_gpu:-1}; k++)); do devices+=("$gpu"); done
        done
    fi
else
    [[ -n "$per_gpu" ]] && die "--agents-per-gpu: no GPU found (use --gpus or --agents N)"
    for ((i = 0; i < ${agents:-1}; i++)); do devices+=(""); done
fi

# --- the sweep ---------------------------------------------------------------------------------
quote() {
    local out="" word
    for word in "$@"; do out+=" $(printf '%q' "$word")"; done
    echo "${out# }"
}

storage_args=()
[[ -n "$storage" ]] && storage_args=(--storage "$storage")
if [[ -n "$local_file" ]]; then
    create=(python -m sweeper create "$local_file" "${storage_args[@]}")
    [[ -n "$name" ]] && create+=(--name "$name")
    [[ -n "$max_retries" ]] && create+=(--max-retries "$max_retries")
    echo "[run_agent] $(quote "${create[@]}")"
    if [[ $dry_run -eq 1 ]]; then
        sweep_id="ID"  # what create would print
    else
        sweep_id=$("${create[@]}")
        echo "[run_agent] local sweep $sweep_id"
    fi
fi

count_args=()
[[ -n "$count" ]] && count_args=(--count "$count")
if [[ "$sweep_id" == */* ]]; then
    agent=(wandb agent --forward-signals "${count_args[@]}" "$sweep_id")
else
    agent=(python -m sweeper agent "$sweep_id" "${count_args[@]}" "${storage_args[@]}")
fi

# --- start, stop, wait -------------------------------------------------------------------------
pids=()
stopping=0
terminating=0
preempting=0

# shellcheck disable=SC2329  # called by the trap below
stop_agents() {
    # A scheduler's cancel signals this script and its batch shell passes it on: two copies,
    # the second already pending when the trap below ignores later ones.
    # Test and set in one command: a copy that bash runs nested in this handler, between a
    # test and a set, would stop the agents twice.
    ((terminating++ == 0)) || return 0
    stopping=1
    trap '' INT TERM
    echo "[run_agent] stopping ${#pids[@]} agent(s): ${pids[*]}" >&2
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
}
trap stop_agents INT TERM

# The trial processes a wandb agent runs: its children that carry a run's parameters (not its
# wandb-core service).
# shellcheck disable=SC2329  # called by preempt_agents
trainers_of() {
    local pid ppid
    ps -e -o pid= -o ppid= 2>/dev/null | while read -r pid ppid; do
        [[ "$ppid" == "$1" ]] || continue
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -q '^WANDB_SWEEP_PARAM_PATH=' &&
            echo "$pid"
    done
    return 0
}

# shellcheck disable=SC2329  # called by preempt_agents and the start loop
preempt_agent() {
    local trainer
    if [[ "$sweep_id" == */* ]]; then
        # wandb agent does not pass SIGUSR1 on: signal its trainers here, then stop it with
        # SIGTERM (which it forwards; the trainer, already preempting, still exits 75).
        for trainer in $(trainers_of "$1"); do
            echo "[run_agent] SIGUSR1 to trainer pid $trainer (agent pid $1)" >&2
            kill -USR1 "$trainer" 2>/dev/null || true
        done
        kill -TERM "$1" 2>/dev/null || true
    else
        kill -USR1 "$1" 2>/dev/null || true
    fi
}

# shellcheck disable=SC2329  # called by the trap below
preempt_agents() {
    ((stopping++ == 0)) || return 0
    preempting=1
    echo "[run_agent] SIGUSR1: preempting ${#pids[@]} agent(s): ${pids[*]}" >&2
    local pid
    for pid in "${pids[@]}"; do
        preempt_agent "$pid"
    done
}
trap preempt_agents USR1

# CPU agents share the cores: give each its share of threads (torch would start one per core in
# every agent, and oversubscribed OpenMP threads slow training many times over).
if [[ -z "${devices[0]}" && -z "${OMP_NUM_THREADS:-}" ]]; then
    cores=$(nproc 2>/dev/null || echo 1)
    export OMP_NUM_THREADS=$((cores / ${#devices[@]} > 0 ? cores / ${#devices[@]} : 1))
    echo "[run_agent] ${#devices[@]} CPU agent(s) on $cores core(s): OMP_NUM_THREADS=$OMP_NUM_THREADS each"
fi

# Each agent in its own session: a Ctrl-C in the terminal reaches only this script, which
# stops the agents with SIGTERM; they stop their runs the same way (checkpoint, clean exit)
# instead of every process getting SIGINT at once. (setsid keeps the PID: it forks only when
# its caller leads a process group, which a background job of this script never does.)
session=()
command -v setsid >/dev/null 2>&1 && session=(setsid)

[[ $dry_run -eq 1 ]] || mkdir -p "$logs"
tag=${sweep_id##*/}
tag=${tag//[^A-Za-z0-9_-]/_}
for i in "${!devices[@]}"; do
    [[ $stopping -eq 0 ]] || break
    device=${devices[i]}
    where=${device:+GPU $device}
    log="$logs/agent-$tag-$i${device:+-gpu${device//[^A-Za-z0-9_-]/_}}.log"
    echo "[run_agent] agent $i (${where:-CPU}): CUDA_VISIBLE_DEVICES=$device $(quote "${agent[@]}") > $log 2>&1"
    [[ $dry_run -eq 1 ]] && continue
    if [[ $i -gt 0 ]]; then
        sleep "$stagger" &
        wait $! || true
        [[ $stopping -eq 0 ]] || break
    fi
    # SIGUSR1 ignored from the start: a scheduler that signals every process of the job
    # (scancel --full) must not end a wandb agent; the trainers install their own handler.
    (
        trap '' USR1
        CUDA_VISIBLE_DEVICES=$device PYTHONUNBUFFERED=1 exec "${session[@]}" "${agent[@]}" >"$log" 2>&1
    ) &
    pids+=($!)
    # A signal trapped between the start above and the line before missed this agent.
    if [[ $preempting -eq 1 ]]; then
        preempt_agent "$!"
    elif [[ $terminating -ne 0 ]]; then
        kill -TERM "$!" 2>/dev/null || true
    fi
done
[[ $dry_run -eq 1 ]] && exit 0

failed=0
for pid in "${pids[@]}"; do
    # wait returns early when a trapped signal arrives: wait again until the agent has ended,
    # then once more for its own status (bash keeps it), not the signal's.
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid" || true
    done
    status=0
    wait "$pid" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "[run_agent] agent pid $pid exited with status $status" >&2
        failed=1
    fi
done
if [[ $preempting -eq 1 ]]; then
    echo "[run_agent] preempted: trials given back, to resume from their checkpoints" >&2
    exit 75
fi
if [[ $stopping -ne 0 ]]; then
    exit 130
fi
if [[ "$sweep_id" != */* ]]; then
    python -m sweeper status "$sweep_id" "${storage_args[@]}" || failed=1
    echo "[run_agent] offline runs: <output_dir>/wandb, default outputs/wandb (browse: wandb leet outputs/wandb; upload: wandb sync)"
    echo "[run_agent] report: python -m analysis report $sweep_id"
fi
exit "$failed"
