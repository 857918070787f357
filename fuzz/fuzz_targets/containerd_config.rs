//! containerd's config.toml (operator input on the node): any bytes as one
//! config file, parsed as the agent parses it, merged behind a main file,
//! and judged for the live pull trust with an empty and a busy certs.d.
#![no_main]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use node_cert_agent::node::containerd::{parse_config_file, parse_registry_config};
use node_cert_agent::trust::pull_trust::{assess, DefaultDir};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/containerd/conf.d/fuzz.toml");
    let Ok(file) = parse_config_file(path, &text) else {
        return;
    };
    let main = parse_config_file(
        Path::new("/etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
    )
    .expect("the fixed main file parses");
    let config = parse_registry_config(&[
        (PathBuf::from("/etc/containerd/config.toml"), main),
        (path.to_path_buf(), file),
    ]);
    let listings: Vec<_> = config
        .dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let names: BTreeMap<String, bool> = if i % 2 == 0 {
                BTreeMap::new()
            } else {
                [("registry.test_5000_".to_string(), true)].into()
            };
            (d.clone(), Some(names))
        })
        .collect();
    let a = assess(&config, &listings, &DefaultDir::default());
    let _ = (a.trust.is_live(), config.config_path_hint());
});
