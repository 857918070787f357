#!/usr/bin/env bash
# Stops test nodes and registries that an aborted test run left behind, and
# unmounts their overlays. Only touches what the harness creates.
set -uo pipefail
for pid in $(pgrep -f 'systemd-nspawn .*--register=no' || true); do
  for child in $(pgrep -P "$pid" || true); do kill -9 "$child" 2>/dev/null; done
  kill -9 "$pid" 2>/dev/null
done
pkill -9 -f 'docker-registry serve .*nca' 2>/dev/null || true
sleep 0.5
for m in $(awk '$3 == "overlay" && $2 ~ /nca/ {print $2}' /proc/mounts); do
  umount -l "$m" 2>/dev/null || true
done
exit 0
