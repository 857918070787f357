//! The tests of `agent`.

use super::*;

#[test]
fn wanted_by_reads_only_the_install_section() {
    let unit = "[Unit]\nWantedBy=nope.target\n[Install]\nWantedBy=multi-user.target containerd.service\nWantedBy=x.target\n";
    assert_eq!(
        wanted_by(unit),
        vec!["multi-user.target", "containerd.service", "x.target"]
    );
}

#[test]
fn shipped_units_are_enableable() {
    for unit in [AGENT_UNIT, PROVISION_UNIT] {
        let text = std::fs::read_to_string(shipped_file(unit)).unwrap();
        assert!(
            wanted_by(&text).contains(&"multi-user.target".to_owned()),
            "{unit}"
        );
    }
}

#[test]
fn parses_systemd_timespans() {
    assert_eq!(parse_systemd_timespan("10s"), Some(Duration::from_secs(10)));
    assert_eq!(
        parse_systemd_timespan("1min 30s"),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        parse_systemd_timespan("500ms"),
        Some(Duration::from_millis(500))
    );
    assert_eq!(parse_systemd_timespan("0"), Some(Duration::ZERO));
    assert_eq!(parse_systemd_timespan("infinity"), None);
    assert_eq!(parse_systemd_timespan("5x"), None);
}

#[test]
fn host_config_lists_sources() {
    let y = host_config(&["/a"], &["/b c"]);
    assert_eq!(
        y,
        "ca-dir:\n  - \"/a\"\nca-file:\n  - \"/b c\"\nrestart-unit:\n  - containerd.service\nrestart-min-spacing-seconds: 0\n"
    );
}

#[test]
fn log_entries_from_both_modes() {
    let j = LogEntry::from_journal(serde_json::json!({
        "MESSAGE": "error: key \"x\": bad", "PRIORITY": "3", "CA_KEY": "x"
    }));
    assert!(j.error);
    assert_eq!(j.ca_key().as_deref(), Some("x"));
    let p = LogEntry::from_json_line(
        r#"{"level":"INFO","message":"reconciled: no change","input_errors":false}"#,
    );
    assert!(p.is_pass() && !p.error);
    assert_eq!(p.field("input_errors").as_deref(), Some("false"));
    let raw = LogEntry::from_json_line("node-cert-agent: error: boom");
    assert_eq!(raw.message, "node-cert-agent: error: boom");
}
