//! Start-up check of kernel settings that weaken SYN-flood handling or cap
//! the configured listen backlogs (issue: local DDoS absorption). Warns; the
//! daemon never changes the host's settings itself.

use std::path::Path;

/// The settings read, in `/proc/sys` terms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    pub tcp_syncookies: Option<u32>,
    pub somaxconn: Option<u32>,
    pub tcp_max_syn_backlog: Option<u32>,
}

impl Kernel {
    pub fn read() -> Kernel {
        let get = |p: &str| -> Option<u32> {
            std::fs::read_to_string(Path::new("/proc/sys").join(p))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Kernel {
            tcp_syncookies: get("net/ipv4/tcp_syncookies"),
            somaxconn: get("net/core/somaxconn"),
            tcp_max_syn_backlog: get("net/ipv4/tcp_max_syn_backlog"),
        }
    }
}

/// Human-readable warnings for `k` given the largest configured backlog.
pub fn warnings(k: &Kernel, max_backlog: u32) -> Vec<String> {
    let mut w = Vec::new();
    if k.tcp_syncookies == Some(0) {
        w.push(
            "net.ipv4.tcp_syncookies = 0: a SYN flood can fill the listen queues; set it to 1 (cookies when the queue overflows)"
                .to_string(),
        );
    }
    if let Some(s) = k.somaxconn {
        if s < max_backlog {
            w.push(format!(
                "net.core.somaxconn = {s} caps the configured backlog of {max_backlog}; raise it to at least {max_backlog}"
            ));
        }
    }
    if let Some(s) = k.tcp_max_syn_backlog {
        if s < max_backlog {
            w.push(format!(
                "net.ipv4.tcp_max_syn_backlog = {s} is below the configured backlog of {max_backlog}; half-open connections beyond it are dropped or answered with cookies"
            ));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_weak_settings_only() {
        let good = Kernel {
            tcp_syncookies: Some(1),
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(4096),
        };
        assert!(warnings(&good, 4096).is_empty());
        let bad = Kernel {
            tcp_syncookies: Some(0),
            somaxconn: Some(128),
            tcp_max_syn_backlog: Some(256),
        };
        let w = warnings(&bad, 4096);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("tcp_syncookies"));
        assert!(w[1].contains("somaxconn = 128"));
        // unreadable settings (e.g. another OS) are not warned about
        assert!(warnings(&Kernel::default(), 4096).is_empty());
    }
}
