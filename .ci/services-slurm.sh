# A real one-node SLURM for the SLURM launcher's tests (tests/runs/test_slurm.py), for .ci/run (sourced,
# not run): Debian's slurm-wlm (slurmctld and slurmd, 22.05 on bookworm) and munge, this machine as both
# the controller and the only node, with 2 CPUs. No cgroups (ProctrackType=proctrack/linuxproc, no task
# plugin): CI machines and containers rarely give us a cgroup tree to manage. No accounting either
# (accounting_storage/none, no slurmdbd), so sacct cannot answer; the launcher reads an ended job from
# `scontrol show job`, which works while the controller remembers the job: MinJobAge=3600 keeps it an hour.
# start_slurm exports CLDASH_TEST_SLURM=1 once `sinfo` shows the node idle; stop_slurm stops the daemons.
# Every state, spool and log file lives under one mktemp folder (SLURM_DIR); only /etc/munge's key is
# created where munged looks for it, when it is missing.

install_slurm() {
  if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null) || echo "could not install slurm-wlm munge"
  fi
}

start_slurm() {
  install_slurm
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    echo "slurm is not installed; the SLURM tests fail under CI"
    return 0
  fi
  SLURM_DIR="$(mktemp -d /tmp/slurm-ci.XXXX)"
  mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool" "$SLURM_DIR/log" "$SLURM_DIR/munge"
  # munge: a key (kept if the machine has one), its daemon on a socket of our own
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
  chown root:root /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  MUNGE_SOCKET="$SLURM_DIR/munge/munge.socket.2"
  munged --force --socket="$MUNGE_SOCKET" --pid-file="$SLURM_DIR/munge/munged.pid" \
    --log-file="$SLURM_DIR/log/munged.log" --seed-file="$SLURM_DIR/munge/munged.seed" || {
    echo "munged could not start; the SLURM tests fail under CI"; tail -n 20 "$SLURM_DIR/log/munged.log"; return 0; }
  local host
  host="$(hostname -s)"
  SLURM_CONF="$SLURM_DIR/slurm.conf"
  cat >"$SLURM_CONF" <<EOF
ClusterName=cldash-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmctldPort=6917
SlurmdPort=6918
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
Waittime=0
NodeName=$host CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF
  # -i: ignore a state file of an earlier start; -c: a clean start (no jobs carried over)
  slurmctld -i -c -f "$SLURM_CONF" && slurmd -f "$SLURM_CONF" || {
    echo "slurm could not start; the SLURM tests fail under CI"; tail -n 20 "$SLURM_DIR"/log/slurm*.log; return 0; }
  local state=""
  for _ in $(seq 1 100); do   # ready when the node is idle (a few seconds)
    state="$(sinfo -h -N -o %t 2>/dev/null | head -n 1)"
    if [ "$state" = "idle" ]; then
      export CLDASH_TEST_SLURM=1
      return 0
    fi
    sleep 0.2
  done
  echo "the SLURM node did not become idle (state: ${state:-none}); the SLURM tests fail under CI"
  sinfo -N -l 2>&1 | tail -n 5; tail -n 20 "$SLURM_DIR"/log/slurm*.log
}

stop_slurm() {
  local f
  if [ -n "${SLURM_DIR:-}" ]; then
    for f in slurmd.pid slurmctld.pid munge/munged.pid; do
      if [ -s "$SLURM_DIR/$f" ]; then
        kill "$(cat "$SLURM_DIR/$f")" 2>/dev/null || true
      fi
    done
    unset CLDASH_TEST_SLURM SLURM_CONF
    SLURM_DIR=""
  fi
}
