//! File descriptors: the process limit (RLIMIT_NOFILE), raised to its hard
//! value at start, and a reserve below it that the control plane (the admin
//! API) never takes, so that health checks, BGP, DNS and the data path keep
//! the descriptors they need when the admin port is being flooded.

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Raises the soft RLIMIT_NOFILE to the hard limit (bounded by
/// `fs.nr_open` when the hard limit is unlimited). Returns (soft, hard)
/// as in effect afterwards.
pub fn raise_nofile() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        let target = if hard == RLIM_INFINITY {
            std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(soft)
                .max(soft)
        } else {
            hard
        };
        if target > soft {
            setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
        }
    }
    getrlimit(Resource::RLIMIT_NOFILE)
}

/// At start: raises the limit, says what it is, and warns if the
/// configured connection caps cannot all be reached under it.
pub fn at_start(cfg: &crate::config::Config) {
    match raise_nofile() {
        Ok((soft, hard)) => {
            let reserve = reserve(soft);
            tracing::info!(soft, hard, reserve, "file descriptor limit (RLIMIT_NOFILE)");
            // Each L4 connection holds two descriptors (client and backend).
            let need = 2 * u64::from(cfg.max_connections.get())
                + cfg.admin.as_ref().map_or(0, |a| u64::from(a.max_connections))
                + reserve;
            if soft != RLIM_INFINITY && need > soft {
                tracing::warn!(
                    limit = soft,
                    need,
                    "max_connections (2 descriptors each), the admin API's cap and the descriptor reserve need more than the file descriptor limit: raise LimitNOFILE or lower max_connections"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the file descriptor limit (RLIMIT_NOFILE)"),
    }
}

/// Descriptors kept free for everything but the admin API: 1/16 of the
/// limit, at least 32 and at most 1024.
pub fn reserve(limit: u64) -> u64 {
    (limit / 16).clamp(32, 1024)
}

/// How long a count of `/proc/self/fd` is reused: counting costs a
/// directory read of every open descriptor, and a flood of admin
/// connections must not turn into a flood of those.
const RECOUNT_AFTER: Duration = Duration::from_millis(100);

static COUNTED: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// Open descriptors of this process (without the one used to count them).
fn count_open() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    u64::try_from(n.saturating_sub(1)).ok()
}

/// Whether this process is within the reserve of its descriptor limit, for
/// a caller that has just obtained descriptor `newest` and closes it if so
/// (else keeps it). The kernel hands out the lowest free number, so at
/// least `newest + 1` descriptors are open; the exact count is read from
/// `/proc/self/fd` at most every 100 ms, and in between each descriptor
/// kept by a caller is added to it.
pub fn in_reserve(newest: RawFd) -> bool {
    let Ok((limit, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return false;
    };
    if limit == RLIM_INFINITY {
        return false;
    }
    let floor = u64::try_from(newest).map_or(0, |n| n + 1);
    let Ok(mut counted) = COUNTED.lock() else {
        return floor + reserve(limit) > limit;
    };
    // A fresh count includes `newest`; a count reused from an earlier call
    // does not, but includes every descriptor kept since.
    let (at, open) = match *counted {
        Some((at, n)) if at.elapsed() < RECOUNT_AFTER => (at, n + 1),
        _ => (Instant::now(), count_open().unwrap_or(floor)),
    };
    let open = open.max(floor);
    let low = open + reserve(limit) > limit;
    // kept: counted from now on; refused: the caller closes it
    *counted = Some((at, if low { open.saturating_sub(1) } else { open }));
    low
}

/// The soft limit now (`None`: unlimited or unknown).
pub fn limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|s| *s != RLIM_INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_bounded() {
        assert_eq!(reserve(256), 32);
        assert_eq!(reserve(4096), 256);
        assert_eq!(reserve(20_000), 1024);
        assert_eq!(reserve(1 << 20), 1024);
    }

    #[test]
    fn counts_own_descriptors() {
        let n = count_open().unwrap_or(0);
        assert!(n >= 3, "{n}");
        assert!(!in_reserve(3));
    }
}
