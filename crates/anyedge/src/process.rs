//! The process itself, for `/metrics` and the status: build version, and
//! the standard Prometheus process metrics (CPU, memory, descriptors,
//! start time) read from `/proc/self`.
//!
//! Hand-written rather than with the `procfs` crate: six numbers from three
//! small files, where the crate would add a dependency tree for them.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The version this binary was built as (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `/proc/self` says now (a field is `None` where it cannot be read).
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Clock ticks per second, the unit of `/proc/self/stat`'s times.
#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the C library; no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold
/// spaces and parentheses: the fields start after the last `)`), so that
/// field N of proc(5) is `fields[N - 3]`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// A `VmRSS:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// When this process started (Unix seconds): its start time since boot
/// (`/proc/self/stat`) plus the boot time (`/proc/stat`); read once. If
/// `/proc` cannot say, the first time this is asked.
pub fn started_unix() -> f64 {
    static STARTED: OnceLock<f64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        let from_proc = || -> Option<f64> {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            let ticks: f64 = stat_fields(&stat).get(22 - 3)?.parse().ok()?;
            let boot = std::fs::read_to_string("/proc/stat").ok()?;
            let btime: f64 = boot
                .lines()
                .find_map(|l| l.strip_prefix("btime "))?
                .trim()
                .parse()
                .ok()?;
            Some(btime + ticks / clock_ticks())
        };
        from_proc().unwrap_or_else(now_unix)
    })
}

/// Seconds since [`started_unix`].
pub fn uptime_seconds() -> f64 {
    (now_unix() - started_unix()).max(0.0)
}

impl Process {
    /// Reads `/proc/self` now.
    pub fn read() -> Process {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let cpu_seconds = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .ok()
            .map(|u| secs(u.user_time()) + secs(u.system_time()));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64)
            // (the directory handle read_dir held is one of them)
            .map(|n| n.saturating_sub(1));
        Process {
            cpu_seconds,
            resident_bytes: status_kb(&status, "VmRSS:"),
            virtual_bytes: status_kb(&status, "VmSize:"),
            open_fds,
            max_fds: crate::fdlimit::limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_skip_a_command_name_with_spaces_and_parens() {
        let f = stat_fields("42 (a b) c) S 1 2 3");
        assert_eq!(f.first(), Some(&"S"), "field 3 is the state");
        assert_eq!(f.get(4 - 3), Some(&"1"));
    }

    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|r| r > 1024 * 1024), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        let started = started_unix();
        assert!(started > 1.5e9 && started <= now_unix() + 1.0, "{started}");
        assert!(uptime_seconds() < 3600.0);
    }
}
