#!/usr/bin/env bash
# `cargo xtask plan --slurm` for real (issue #12): start a one-node Slurm on this machine (its own
# munged, slurmctld and slurmd, in a scratch folder, on ports of its own), submit the generated
# script for the smoke Figure 3 with 2 trials (a 2-task job array and the figures job after it),
# wait, and check the figure's table and drawing equal those of a local `reproduce` to the byte.
# Without Slurm (its Debian packages `slurm-wlm munge` missing and not installable, or not root),
# the same script's tasks run under GNU parallel (or `xargs -P`) instead, and the output says so.
# LTH_NO_SLURM=1 takes the fallback on purpose. The builds are CI's; this adds 15-30 s (measured
# on the 2-core CI machine under load), plus the packages' install where they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
scratch=$(mktemp -d)
# The daemons this script starts, by their pid files (read at exit: slurmctld writes its own
# only once it has daemonised).
pid_files=()
cleanup() {
  [ -n "${SLURM_CONF:-}" ] && scontrol shutdown >/dev/null 2>&1 && sleep 1
  for file in "${pid_files[@]}"; do
    [ -s "$file" ] && kill "$(cat "$file")" 2>/dev/null || true
  done
}
trap cleanup EXIT

figure=(fig3 --scale smoke --trials 2)
cargo xtask reproduce "${figure[@]}" --out "$scratch/local/results" --figures-dir "$scratch/local/figures"
script="$scratch/fig3.sh"
cargo xtask plan "${figure[@]}" --slurm --out "$scratch/cluster/results" --figures-dir "$scratch/cluster/figures" --slurm-script "$script"
bash -n "$script"
grep -q -- '--array=0-$((N_TASKS - 1))' "$script" && grep -q -- '--dependency=afterok:"$array"' "$script"
n_tasks=$(sed -n 's/^N_TASKS=//p' "$script")

have_slurm() { command -v slurmctld && command -v slurmd && command -v munged && command -v sbatch; } >/dev/null
if ! have_slurm && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing slurm-wlm and munge (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null 2>&1 || true
fi

# Starts munged, slurmctld and slurmd on this machine; fails (leaving the fallback) if any does not come up.
start_slurm() {
  have_slurm && [ "$(id -u)" = 0 ] || return 1
  local dir="$scratch/slurm" host
  host=$(hostname -s)
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/pid" \
    --log-file="$dir/munge/log" --seed-file="$dir/munge/seed" || return 1
  pid_files+=("$dir/munge/pid")
  cat >"$dir/slurm.conf" <<CONF
ClusterName=lthci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=16917
SlurmdPort=16918
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  export SLURM_CONF="$dir/slurm.conf"
  pid_files+=("$dir/slurmctld.pid" "$dir/slurmd.pid")
  slurmctld -f "$SLURM_CONF" || return 1
  slurmd -f "$SLURM_CONF" || return 1
  for _ in $(seq 30); do
    sinfo -h -o %t 2>/dev/null | grep -q idle && return 0
    sleep 1
  done
  echo "slurm did not come up; logs in $dir" >&2
  return 1
}

if [ "${LTH_NO_SLURM:-}" != 1 ] && start_slurm; then
  how="one-node Slurm ($(slurmd -V))"
  submitted=$(bash "$script")
  echo "$submitted"
  read -r array final <<<"$(tail -1 <<<"$submitted")"
  if ! [[ "$array" =~ ^[0-9]+$ && "$final" =~ ^[0-9]+$ ]]; then
    echo "submitting $script did not give two job ids; logs in $scratch/slurm" >&2
    exit 1
  fi
  deadline=$(($(date +%s) + 600))
  while squeue -h -j "$array,$final" 2>/dev/null | grep -q .; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "slurm jobs $array and $final still queued after 10 minutes" >&2
      squeue >&2
      exit 1
    fi
    sleep 2
  done
else
  # The same script's tasks and figures job, in the order the dependency gives them.
  if command -v parallel >/dev/null; then
    how="GNU parallel (no one-node Slurm here: LTH_NO_SLURM=1, its packages are missing, or this is not root)"
    seq 0 $((n_tasks - 1)) | SCRIPT="$script" parallel --halt now,fail=1 'SLURM_ARRAY_TASK_ID={} bash "$SCRIPT" task'
  else
    how="xargs -P (neither Slurm nor GNU parallel is installed here)"
    seq 0 $((n_tasks - 1)) | xargs -P 2 -I{} env SLURM_ARRAY_TASK_ID={} bash "$script" task
  fi
  bash "$script" figures
fi
for file in fig3.csv fig3.svg; do
  if ! cmp "$scratch/local/figures/$file" "$scratch/cluster/figures/$file"; then
    echo "the $how run drew a different $file than a local reproduce; logs: $scratch/cluster/results/slurm" >&2
    exit 1
  fi
done
echo "slurm smoke: $n_tasks array tasks and the figures job under $how drew fig3 identical to a local reproduce ($(($(date +%s) - started)) s)"
