//! A recording fake of [`Systemd`] for tests (unit tests, `agent/tests` and
//! `integration-tests`, through the `testing` feature): it records every
//! call and answers as told.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use super::{CommandOutcome, JobResult, Systemd, SystemdError};

#[derive(Default)]
pub struct RecordingSystemd {
    pub restarts: StdMutex<Vec<String>>,
    pub commands: StdMutex<Vec<Vec<String>>>,
    /// When set, restarts answer with this job result.
    pub restart_result: StdMutex<Option<String>>,
    /// When set, commands exit with this status.
    pub command_status: StdMutex<i32>,
    /// How long each command takes (awaited, so the runtime stays free).
    pub command_delay: StdMutex<Duration>,
    /// Run on every command, to emulate the refresh tool's effect.
    #[allow(clippy::type_complexity, reason = "a test hook")]
    pub on_command: StdMutex<Option<Box<dyn Fn() + Send>>>,
    /// What `unit_active_since` answers (`None`: not active).
    pub active_since: StdMutex<Option<u64>>,
}

impl RecordingSystemd {
    /// A fake whose commands rebuild `<root>/etc/ssl/certs/ca-certificates.crt`
    /// from a fixed distro part plus the agent's Debian anchors, as
    /// `update-ca-certificates` does.
    pub fn emulating_debian(root: &std::path::Path) -> Self {
        let root = root.to_path_buf();
        let fake = Self::default();
        if let Ok(mut hook) = fake.on_command.lock() {
            *hook = Some(Box::new(move || rebuild_debian_bundle(&root)));
        }
        fake
    }

    pub fn restarts(&self) -> Vec<String> {
        self.restarts.lock().map(|g| g.clone()).unwrap_or_default()
    }
    /// Every command run so far, as argv.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.commands.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

fn rebuild_debian_bundle(root: &std::path::Path) {
    let mut bundle = String::from("distro\n");
    if let Ok(entries) =
        std::fs::read_dir(root.join("usr/local/share/ca-certificates/node-cert-agent"))
    {
        let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            bundle.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
    }
    let dir = root.join("etc/ssl/certs");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("ca-certificates.crt"), bundle);
}

impl Systemd for RecordingSystemd {
    async fn try_restart_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        if let Ok(mut g) = self.restarts.lock() {
            g.push(unit.to_string());
        }
        let result = self.restart_result.lock().ok().and_then(|g| g.clone());
        Ok(JobResult(result.unwrap_or_else(|| "done".into())))
    }

    async fn run_command(&self, argv: &[String]) -> Result<CommandOutcome, SystemdError> {
        if let Ok(mut g) = self.commands.lock() {
            g.push(argv.to_vec());
        }
        let delay = self.command_delay.lock().map(|g| *g).unwrap_or_default();
        tokio::time::sleep(delay).await;
        if let Ok(hook) = self.on_command.lock() {
            if let Some(f) = hook.as_ref() {
                f();
            }
        }
        let status = self.command_status.lock().map(|g| *g).unwrap_or(0);
        Ok(CommandOutcome {
            unit: "fake.service".into(),
            result: if status == 0 {
                "success".into()
            } else {
                "exit-code".into()
            },
            exit_status: status,
        })
    }

    async fn unit_active_since(&self, _unit: &str) -> Result<Option<u64>, SystemdError> {
        Ok(self.active_since.lock().ok().and_then(|g| *g))
    }
}
