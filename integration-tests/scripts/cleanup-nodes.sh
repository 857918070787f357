#!/usr/bin/env bash
# Stops what a test run recorded, and only that: its nodes (nspawn and the
# node's init), registries and agent processes, by pid and only while the
# process start time still matches the record; then unmounts its overlay
# mounts and removes its cgroups and directories. Nothing is matched by
# pattern against the machine's processes or mounts, so other test runs,
# other engineers' nodes and unrelated nspawn containers are never touched.
#
#   integration-tests/scripts/cleanup-nodes.sh RUN_DIR...
#       clean up these runs (test-all.sh does this for its own run when it ends)
#   integration-tests/scripts/cleanup-nodes.sh --stale
#       clean up every run under $NCA_RUNS_ROOT (default /tmp/nca-test-runs)
#       whose owner process is gone: what aborted runs left behind
#
# The records are written by integration-tests/src/run.rs: one
# `<kind>-<name>.rec` file of key=value lines per node, registry or process,
# and an `owner` file (pid, start) per run directory.
set -uo pipefail

RUNS_ROOT=${NCA_RUNS_ROOT:-/tmp/nca-test-runs}

# The start time of a live pid (field 22 of /proc/<pid>/stat), or nothing:
# a zombie (killed, not yet reaped by its parent) is gone.
start_of() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086 # split the fields on purpose
  set -- $rest
  [[ $1 != Z && $1 != X ]] || return 1
  echo "${20}"
}

# Whether pid $1 is alive and is still the process started at $2.
same_process() {
  [[ -n $1 && -n $2 && $1 != 0 && $2 != 0 ]] || return 1
  [[ $(start_of "$1") == "$2" ]]
}

# Waits up to $3 seconds for process ($1, $2) to end.
wait_gone() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    same_process "$1" "$2" || return 0
    sleep 0.1
  done
  return 1
}

# Stops process ($1, $2): SIGTERM, then SIGKILL after $3 seconds.
stop_process() {
  local pid=$1 start=$2 grace=$3
  same_process "$pid" "$start" || return 0
  kill -TERM "$pid" 2>/dev/null
  wait_gone "$pid" "$start" "$grace" && return 0
  same_process "$pid" "$start" && kill -KILL "$pid" 2>/dev/null
  wait_gone "$pid" "$start" 5
}

is_mounted() {
  awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

unmount() {
  local m=$1 i
  for ((i = 0; i < 50; i++)); do
    is_mounted "$m" || return 0
    umount "$m" 2>/dev/null && continue
    sleep 0.1
  done
  is_mounted "$m" && umount -l "$m"
}

# Whether anything is still mounted at or under directory $1.
has_mounts_under() {
  awk -v d="$1" 'index($5, d) == 1 && (length($5) == length(d) || substr($5, length(d) + 1, 1) == "/") { found = 1 } END { exit !found }' /proc/self/mountinfo
}

remove_cgroup() {
  local dir=$1 i
  [[ -d $dir ]] || return 0
  for ((i = 0; i < 50; i++)); do
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
    [[ -d $dir ]] || return 0
    sleep 0.1
  done
  echo "cleanup: cannot remove cgroup $dir" >&2
  return 1
}

# Value(s) of key $2 in record file $1.
values() {
  sed -n "s/^$2=//p" "$1"
}
value() {
  values "$1" "$2" | head -n 1
}

# Stops what one record describes; removes the record when all is gone.
clean_record() {
  local rec=$1 kind name ok=0 dir m cg
  kind=$(value "$rec" kind)
  name=$(value "$rec" name)
  case "$kind" in
    node)
      # The node's init first: its death ends the node's pid namespace,
      # and nspawn then exits by itself.
      local init_pid init_start nspawn_pid nspawn_start
      init_pid=$(value "$rec" init_pid) init_start=$(value "$rec" init_start)
      nspawn_pid=$(value "$rec" nspawn_pid) nspawn_start=$(value "$rec" nspawn_start)
      if same_process "$init_pid" "$init_start"; then
        kill -KILL "$init_pid" 2>/dev/null
        wait_gone "$init_pid" "$init_start" 10 || ok=1
      fi
      if same_process "$nspawn_pid" "$nspawn_start"; then
        wait_gone "$nspawn_pid" "$nspawn_start" 15 || stop_process "$nspawn_pid" "$nspawn_start" 5 || ok=1
      fi
      while read -r m; do
        [[ -n $m ]] && { unmount "$m" || ok=1; }
      done < <(values "$rec" mount)
      while read -r cg; do
        [[ -n $cg ]] && { remove_cgroup "$cg" || ok=1; }
      done < <(values "$rec" cgroup)
      # The empty directory nspawn may leave on a host whose /run is no tmpfs.
      [[ -n $name ]] && rmdir -- "/run/systemd/nspawn/propagate/$name" 2>/dev/null
      ;;
    registry | process)
      stop_process "$(value "$rec" main_pid)" "$(value "$rec" main_start)" 5 || ok=1
      ;;
    *)
      echo "cleanup: $rec: unknown kind ${kind:-(none)}; leaving it" >&2
      return 1
      ;;
  esac
  dir=$(value "$rec" dir)
  if [[ $ok == 0 && -n $dir && -e $dir ]]; then
    if has_mounts_under "$dir"; then
      echo "cleanup: $name: something is still mounted under $dir; leaving it" >&2
      ok=1
    else
      rm -rf -- "$dir"
    fi
  fi
  if [[ $ok == 0 ]]; then
    rm -f -- "$rec"
    echo "cleanup: stopped $kind $name"
  else
    echo "cleanup: could not fully clean up $kind $name (record kept: $rec)" >&2
  fi
  return "$ok"
}

clean_run() {
  local run=${1%/} rec status=0
  [[ -d $run ]] || return 0
  for rec in "$run"/*.rec; do
    [[ -e $rec ]] || continue
    clean_record "$rec" || status=1
  done
  rm -f -- "$run"/*.rec.tmp
  if [[ $status == 0 ]]; then
    rm -f -- "$run/owner"
    rmdir -- "$run" 2>/dev/null || true
  fi
  return "$status"
}

# Whether the run's owner process still runs (then the run is not stale).
# A run directory without an owner file counts as live for a minute: its
# creator may be about to write it.
owner_alive() {
  local owner=$1/owner
  if [[ ! -f $owner ]]; then
    (($(date +%s) - $(stat -c %Y "$1") < 60))
    return
  fi
  same_process "$(value "$owner" pid)" "$(value "$owner" start)"
}

status=0
case "${1:-}" in
  --stale)
    [[ $# == 1 ]] || { echo "usage: $0 --stale | RUN_DIR..." >&2; exit 2; }
    for run in "$RUNS_ROOT"/*/; do
      [[ -d $run ]] || continue
      owner_alive "$run" && continue
      clean_run "$run" || status=1
    done
    ;;
  "" | -*)
    echo "usage: $0 --stale | RUN_DIR..." >&2
    exit 2
    ;;
  *)
    for run in "$@"; do
      clean_run "$run" || status=1
    done
    ;;
esac
exit "$status"
