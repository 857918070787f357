//! The idle footprint of a running agent, from `/proc/<pid>`: RSS and PSS
//! (with their anonymous and file-backed parts), the file-backed mappings
//! that make most of the RSS, CPU time and context switches per thread.

/// Sum over all threads of `/proc/<pid>/task/*/status` counters, plus RSS
/// and CPU time (utime + stime, ms) of the process.
pub struct Footprint {
    pub rss_kib: u64,
    /// Anonymous memory (heap, stacks): the part not backed by the binary
    /// and its libraries' files.
    pub anon_kib: u64,
    /// Proportional set size: each shared page counted once over all the
    /// processes that map it (`smaps_rollup`), with its parts.
    pub pss_kib: u64,
    pub pss_anon_kib: u64,
    pub pss_file_kib: u64,
    /// The file-backed mappings by resident KiB, largest first.
    pub files: Vec<(String, u64)>,
    pub cpu_ms: f64,
    pub ctxt: u64,
    pub threads: usize,
    /// Context switches per thread, by `tid comm`.
    pub per_thread: std::collections::BTreeMap<String, u64>,
}

pub fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:"), kib("RssAnon:"));
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let rollup_kib = |field: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (pss_kib, pss_anon_kib, pss_file_kib) = (
        rollup_kib("Pss:"),
        rollup_kib("Pss_Anon:"),
        rollup_kib("Pss_File:"),
    );
    let files = file_mappings(pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let clk = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let mut ctxt = 0;
    let mut threads = 0;
    let mut per_thread = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        threads += 1;
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let name = format!("{} {}", t.file_name().to_string_lossy(), comm.trim());
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                let n = v.trim().parse::<u64>().unwrap_or(0);
                ctxt += n;
                *per_thread.entry(name.clone()).or_insert(0) += n;
            }
        }
    }
    Footprint {
        rss_kib,
        anon_kib,
        pss_kib,
        pss_anon_kib,
        pss_file_kib,
        files,
        cpu_ms: ticks as f64 * 1000.0 / clk,
        ctxt,
        threads,
        per_thread,
    }
}

/// Resident KiB of each file mapped by `pid` (`/proc/<pid>/smaps`), summed
/// over its mappings, largest first: where the file-backed RSS comes from
/// (the binary's own pages, libcrypto, libc, ...).
fn file_mappings(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_file: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: address perms offset dev inode [path].
        if fields.len() >= 5 && fields[0].contains('-') && !fields[0].ends_with(':') {
            current = fields
                .get(5)
                .filter(|p| p.starts_with('/'))
                .map(|p| p.to_string());
        } else if let (Some(file), Some(rss)) = (&current, line.strip_prefix("Rss:")) {
            let kib: u64 = rss
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *by_file.entry(file.clone()).or_default() += kib;
        }
    }
    let mut files: Vec<(String, u64)> = by_file.into_iter().filter(|(_, k)| *k > 0).collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    files
}
