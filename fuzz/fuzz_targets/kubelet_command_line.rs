//! kubelet's unit and config (operator input on the node): any bytes split
//! into an environment file, a command line (words at spaces, with `$VAR`
//! and `${VAR}` references) and a KubeletConfiguration, expanded and parsed
//! as the agent reads kubelet's effective settings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use node_cert_agent::kubelet::kubelet_config::{
    expand_command_line, parse_environment_file, unit_environment, ConfigKeys, KubeletFlags,
};
use node_cert_agent::node::systemd::UnitExec;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let env_file = parts.next().unwrap_or_default();
    let command = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let _ = parse_environment_file(env_file);
    let exec = UnitExec {
        argv: command.split(' ').map(str::to_string).collect(),
        environment: env_file.lines().map(str::to_string).collect(),
        environment_files: vec![("/etc/default/kubelet".into(), true)],
    };
    let env = unit_environment(&exec, |_| Some(env_file.to_string()));
    let argv = expand_command_line(&exec.argv, &env);
    let _ = KubeletFlags::parse(&argv);
    let _ = ConfigKeys::parse(config);
});
