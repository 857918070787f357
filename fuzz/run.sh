#!/usr/bin/env bash
# Fuzzes the agent's parsers: fuzz/run.sh [SECONDS] (per target, default 20).
# Installs cargo-fuzz if missing. libFuzzer needs nightly-only compiler flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them (set FUZZ_TOOLCHAIN
# to use a nightly toolchain instead, e.g. FUZZ_TOOLCHAIN=nightly).
# Exits non-zero on the first crash; the input is saved under
# fuzz/artifacts/<target>/ and `cargo fuzz run <target> <file>` replays it.
set -euo pipefail
seconds="${1:-20}"
cd "$(dirname "$0")"
targets=(validate_key kubeconfig_parse os_release rfc3339 secret_manifest daemon_status renew_revocation secret_dir escape_text api_secret fleet_node fleet_timeout node_object containerd_config kubelet_command_line docker_daemon_json)

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

cargo_fuzz() {
  if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    cargo "+$FUZZ_TOOLCHAIN" fuzz "$@"
  else
    RUSTC_BOOTSTRAP=1 cargo fuzz "$@"
  fi
}

# Seeds: the repo's own fixtures, so the fuzzer starts from real inputs.
seed() { # target, files...
  local dir="corpus/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    [[ -f "$f" ]] && cp "$f" "$dir/seed-$(basename "$f")"
  done
  return 0
}
data=../agent/tests/data
seed validate_key "$data"/corpus/keys/* "$data"/corpus/certs/*.pem
seed kubeconfig_parse "$data"/kubeconfig/* "$data"/corpus/kubeconfig/*
seed os_release "$data"/os-release/*
seed rfc3339 "$data"/fuzz/rfc3339/*
seed secret_manifest "$data"/fuzz/secret_manifest/* ../manifests/examples/custom-ca-trust-secret.yaml
seed daemon_status "$data"/fuzz/daemon_status/*
seed renew_revocation "$data"/renewrevocation/*
seed escape_text "$data"/corpus/keys/*
seed api_secret "$data"/fuzz/api_secret/*
seed fleet_node "$data"/fuzz/fleet_node/*
seed fleet_timeout "$data"/fuzz/fleet_timeout/*
seed node_object "$data"/fuzz/node_object/*
seed containerd_config "$data"/fuzz/containerd_config/*
seed kubelet_command_line "$data"/fuzz/kubelet_command_line/*
seed docker_daemon_json "$data"/fuzz/docker_daemon_json/*

cargo_fuzz build -O
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  # -max_len: a Secret key is at most 1 MiB; 64 KiB keeps runs fast and
  # still covers bundles of many certificates.
  rc=0
  cargo_fuzz run -O "$t" -- -max_total_time="$seconds" -max_len=65536 \
    -print_final_stats=1 >"artifacts-$t.log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)|^==[0-9]+== ERROR|panicked at' "artifacts-$t.log" || true
  if [[ "$rc" -ne 0 ]]; then
    tail -n 40 "artifacts-$t.log" >&2
    echo "fuzz target $t failed (exit $rc); see fuzz/artifacts-$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "all fuzz targets ran ${seconds}s each without a crash"
