//! Checks across sections: every listener alone on its address and port,
//! no backend on one of our own listeners.

use std::net::SocketAddr;

use super::{line_col, AnycastConfig, ConfigError, Ctx, PeerConfig, ServiceConfig};

/// One of our listening addresses and where the file sets it.
pub(super) struct Bound {
    pub(super) addr: SocketAddr,
    pub(super) span: std::ops::Range<usize>,
    pub(super) field: String,
}

/// Whether two listening addresses take (some of) the same connections:
/// same port and family, and the same IP or one of them the wildcard. Both
/// would bind (SO_REUSEPORT), and the kernel would split the connections
/// between them (or give the specific one all of its own).
pub fn listen_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let (ia, ib) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && ia.is_ipv4() == ib.is_ipv4() && (ia == ib || ia.is_unspecified() || ib.is_unspecified())
}

/// Every TCP listener (services, DNS, admin) must be alone on its address
/// and port: the later one in the file is the error.
pub(super) fn check_clashes(cx: &Ctx<'_>, bound: &mut [Bound]) -> Result<(), ConfigError> {
    bound.sort_by_key(|b| b.span.start);
    for (i, b) in bound.iter().enumerate() {
        if let Some(first) = bound[..i].iter().find(|f| listen_overlap(f.addr, b.addr)) {
            let (line, _) = line_col(cx.src, first.span.start);
            let what = if first.addr == b.addr {
                format!("{} is also {} (line {line})", b.addr, first.field)
            } else {
                format!("{} overlaps {} {} (line {line})", b.addr, first.field, first.addr)
            };
            return Err(cx.err(
                b.span.clone(),
                b.field.clone(),
                format!("{what}: two listeners on one port would split its connections between them"),
            ));
        }
    }
    Ok(())
}

/// No backend may be one of our own listeners (`bound`): the connection
/// would come back to us. `backend_spans` are where each service's backend
/// addresses are written.
pub(super) fn check_loops(
    cx: &Ctx<'_>,
    services: &[ServiceConfig],
    backend_spans: Vec<Vec<std::ops::Range<usize>>>,
    bound: &[Bound],
) -> Result<(), ConfigError> {
    for (svc, spans) in services.iter().zip(backend_spans) {
        for (bi, (b, span)) in svc.backends.iter().zip(spans).enumerate() {
            if let Some(l) = bound.iter().find(|l| loops_back(b.address, l.addr)) {
                let (line, _) = line_col(cx.src, l.span.start);
                return Err(cx.err(
                    span,
                    format!("service {:?}.backend[{bi}].address", svc.name),
                    format!(
                        "{} is our own listener {} {} (line {line}): the connection would loop back into anyedge",
                        b.address, l.field, l.addr
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The warning for a service (its name written at `name_span`) whose
/// backends all have weight 0.
pub(super) fn weight_warning(cx: &Ctx<'_>, svc: &ServiceConfig, name_span: std::ops::Range<usize>) -> Option<String> {
    if svc.backends.is_empty() || !svc.backends.iter().all(|b| b.weight == 0) {
        return None;
    }
    let (line, _) = line_col(cx.src, name_span.start);
    Some(format!(
        "{}:{line}: service {:?}.backend: every backend has weight 0: the service serves nobody",
        cx.file, svc.name
    ))
}

/// Warnings for peers that cannot be given some of the anycast prefixes:
/// a route needs a next hop of the prefix's family (`next_hop` /
/// `next_hop_v6`, or a `local_address` of that family), else the prefix is
/// never announced to that peer, whatever its health.
pub(super) fn next_hop_warnings(
    cx: &Ctx<'_>,
    peers: &[PeerConfig],
    spans: &[std::ops::Range<usize>],
    anycast: &[AnycastConfig],
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, span) in peers.iter().zip(spans) {
        let (line, _) = line_col(cx.src, span.start);
        for (v6, family, fields) in [
            (false, "IPv4", "next_hop or an IPv4 local_address"),
            (true, "IPv6", "next_hop_v6 or an IPv6 local_address"),
        ] {
            let has = if v6 {
                p.next_hop_v6.is_some() || p.local_address.is_some_and(|a| a.is_ipv6())
            } else {
                p.next_hop.is_some() || p.local_address.is_some_and(|a| a.is_ipv4())
            };
            let wanted: Vec<String> = anycast
                .iter()
                .filter(|a| a.prefix.0.is_ipv6() == v6)
                .map(|a| format!("{}/{}", a.prefix.0, a.prefix.1))
                .collect();
            if !has && !wanted.is_empty() {
                out.push(format!(
                    "{}:{line}: bgp.peer {:?}: no {family} next hop ({fields}): {} never announced to it",
                    cx.file,
                    p.name,
                    wanted.join(", ")
                ));
            }
        }
    }
    out
}

/// Whether connecting to `backend` reaches our listener on `listen`.
fn loops_back(backend: SocketAddr, listen: SocketAddr) -> bool {
    let b = backend.ip().to_canonical();
    let l = listen.ip().to_canonical();
    if backend.port() != listen.port() || b.is_ipv4() != l.is_ipv4() {
        return false;
    }
    // connecting to the wildcard address reaches 127.0.0.1 (::1)
    let lo: std::net::IpAddr = if b.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    let b = if b.is_unspecified() { lo } else { b };
    b == l || (l.is_unspecified() && (b.is_loopback() || crate::net::is_local(b)))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{err_with, MIN, TWO};
    use crate::config::Config;

    #[test]
    fn listeners_on_one_port_rejected_at_the_second() {
        let two = |listen: &str| Config::parse(&TWO.replace("LISTEN", listen), "t.toml");
        for clash in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let e = two(clash).unwrap_err();
            assert_eq!(
                (e.line, e.column, e.field.as_str()),
                (14, 11, "service \"api\".listen[0]"),
                "{e}"
            );
            assert!(
                e.message.contains("service \"web\".listen[0]") && e.message.contains("(line 7)"),
                "{e}"
            );
        }
        // other port, other address, other family: fine
        for ok in ["127.0.0.1:8081", "127.0.0.2:8080", "[::]:8080"] {
            two(ok).unwrap();
        }
        let e = Config::parse(&MIN.replace("\"[::1]:8080\"", "\"0.0.0.0:8080\""), "t.toml").unwrap_err();
        // (in one service, too: the specific one is redundant)
        assert!(e.message.contains("overlaps"), "{e}");
        let e = Config::parse(&format!("[admin]\nlisten = \"127.0.0.1:8080\"\n{MIN}"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (9, "service \"web\".listen[0]"), "{e}");
        assert!(e.message.contains("admin.listen (line 2)"), "{e}");
        let e = Config::parse(&format!("{MIN}[admin]\nlisten = \"[::1]:8080\"\n"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (13, "admin.listen"), "{e}");
        let e = err_with("[dns]\nlisten = [\"127.0.0.1:53\", \"0.0.0.0:8080\"]\n");
        assert_eq!((e.line, e.column, e.field.as_str()), (13, 27, "dns.listen[1]"), "{e}");
        let e = Config::parse(
            &format!("[admin]\nlisten = \"127.0.0.1:53\"\n{MIN}[dns]\nlisten = [\"127.0.0.1\"]\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (15, "dns.listen[0]"), "{e}");
    }

    #[test]
    fn port_zero_rejected() {
        let e = Config::parse(&MIN.replace("127.0.0.1:8080", "127.0.0.1:0"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "service \"web\".listen"), "{e}");
        let e = err_with("[dns]\nlisten = [\"127.0.0.1:0\"]\n");
        assert_eq!((e.line, e.field.as_str()), (13, "dns.listen[0]"), "{e}");
        let e = Config::parse(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{MIN}"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "admin.listen"), "{e}");
    }

    #[test]
    fn backend_on_our_own_listener_rejected() {
        for (listen, backend) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "0.0.0.0:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "[::1]:8080"),
        ] {
            let src = MIN
                .replace("\"127.0.0.1:8080\", \"[::1]:8080\"", &format!("\"{listen}\""))
                .replace("127.0.0.1:9001", backend);
            let e = Config::parse(&src, "t.toml").unwrap_err();
            assert_eq!(
                (e.line, e.field.as_str()),
                (11, "service \"web\".backend[0].address"),
                "{listen} {backend}: {e}"
            );
            assert!(e.message.contains("loop"), "{e}");
        }
        // another service's listener, the admin API
        let e = Config::parse(
            &TWO.replace("LISTEN", "127.0.0.1:8081").replace("9002", "8080"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (17, "service \"api\".backend[0].address"),
            "{e}"
        );
        let e = Config::parse(
            &format!("[admin]\nlisten = \"127.0.0.1:9180\"\n{}", MIN.replace("9001", "9180")),
            "t.toml",
        )
        .unwrap_err();
        assert!(e.message.contains("admin.listen"), "{e}");
        // a remote backend on the port of a wildcard listener is normal
        let src = MIN
            .replace("\"127.0.0.1:8080\", \"[::1]:8080\"", "\"0.0.0.0:8080\"")
            .replace("127.0.0.1:9001", "192.0.2.10:8080");
        Config::parse(&src, "t.toml").unwrap();
    }

    #[test]
    fn all_weights_zero_warns() {
        let c = Config::parse(&MIN.replace("name = \"b1\"", "name = \"b1\"\nweight = 0"), "t.toml").unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("t.toml:6: "), "{:?}", c.warnings);
        assert!(c.warnings[0].contains("weight 0"), "{:?}", c.warnings);
        assert!(Config::parse(MIN, "t.toml").unwrap().warnings.is_empty());
    }

    #[test]
    fn a_peer_without_a_next_hop_for_a_prefix_family_is_warned_about() {
        let cfg = |local: &str| {
            format!(
                "[pop]\nname = \"x\"\n[bgp]\nasn = 65001\nrouter_id = \"198.18.0.1\"\n[[bgp.peer]]\nname = \"r1\"\naddress = \"198.18.0.2\"\nasn = 65000\n{local}\n[[anycast]]\nprefix = \"192.0.2.10/32\"\n[[anycast]]\nprefix = \"2001:db8::10/128\"\n"
            )
        };
        let c = Config::parse(&cfg(""), "t.toml").unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("t.toml:7: bgp.peer \"r1\": no IPv4 next hop")
                && c.warnings[0].contains("192.0.2.10/32"),
            "{:?}",
            c.warnings
        );
        assert!(c.warnings[1].contains("no IPv6 next hop"), "{:?}", c.warnings);
        let c = Config::parse(&cfg("local_address = \"198.18.0.1\""), "t.toml").unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("IPv6"), "{:?}", c.warnings);
    }
}
