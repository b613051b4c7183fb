//! Signature expiry of pre-signed zones (signed here by ldns-signzone,
//! Debian `ldnsutils`): the earliest RRSIG expiration of the version served
//! is in the zone's status and in /metrics, and a zone whose signatures
//! expire within a day is logged once (not again while it stays so), and
//! logged as fresh again once a re-signed version is loaded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyedge_testkit::dns::{unix_now, utc_stamp};
use common::{free_port, http, Anyedge};

const TOKEN: &str = "sig-expiry-admin-token-0123456789";

/// A key for `apex` in `dir` (its base name).
fn keygen(dir: &Path, apex: &str) -> String {
    let out = Command::new("ldns-keygen")
        .current_dir(dir)
        .args(["-a", "ECDSAP256SHA256", "-k", apex])
        .output()
        .expect("ldns-keygen (Debian ldnsutils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Signs a small zone `apex` with signatures expiring `valid` seconds from
/// now, into `<dir>/<apex>zone`.
fn signed_zone(dir: &Path, apex: &str, key: &str, valid: u64) -> PathBuf {
    let src = dir.join(format!("{apex}src"));
    std::fs::write(
        &src,
        format!(
            "$ORIGIN {apex}\n$TTL 300\n@ SOA ns hm 1 7200 3600 1209600 300\n@ NS ns\nns A 192.0.2.53\nwww A 192.0.2.1\n"
        ),
    )
    .unwrap();
    let out_file = dir.join(format!("{apex}zone"));
    let t = unix_now();
    let out = Command::new("ldns-signzone")
        .current_dir(dir)
        .args([
            "-i",
            &utc_stamp(t - 3600),
            "-e",
            &utc_stamp(t + valid),
            "-o",
            apex,
            "-f",
        ])
        .arg(&out_file)
        .arg(&src)
        .arg(key)
        .output()
        .expect("ldns-signzone (Debian ldnsutils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out_file
}

fn status_expiry(admin: SocketAddr, zone: &str) -> f64 {
    let (_, body) = http(admin, "GET", "/api/v1/status", None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let z = v["dns"]["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == zone)
        .unwrap_or_else(|| panic!("{zone} in {body}"));
    z["signatures_expire_in_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("signatures_expire_in_seconds of {z}"))
}

fn metric(admin: SocketAddr, zone: &str) -> f64 {
    let (_, m) = http(admin, "GET", "/metrics", None);
    let prefix = format!("anyedge_dns_zone_signatures_expire_in_seconds{{zone=\"{zone}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in\n{m}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn signature_expiry_is_reported_and_logged_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let soon_key = keygen(d, "soon.test.");
    let later_key = keygen(d, "later.test.");
    let soon = signed_zone(d, "soon.test.", &soon_key, 20 * 3600);
    let later = signed_zone(d, "later.test.", &later_key, 10 * 86400);
    let (dns, admin) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let cfg = format!(
        "[pop]\nname = \"pop-sig\"\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n[dns]\nlisten = [\"{dns}\"]\n\
         [[dns.zone]]\nname = \"soon.test.\"\nfile = \"{}\"\n[[dns.zone]]\nname = \"later.test.\"\nfile = \"{}\"\n",
        soon.display(),
        later.display()
    );
    let e = Anyedge::start(&cfg, dns);
    common::wait_port(admin, Duration::from_secs(20));
    // status and metrics: from now to the earliest expiration
    let s = status_expiry(admin, "soon.test.");
    assert!((20.0 * 3600.0 - 600.0..=20.0 * 3600.0).contains(&s), "soon.test.: {s}");
    let l = metric(admin, "later.test.");
    assert!(
        (10.0 * 86400.0 - 600.0..=10.0 * 86400.0).contains(&l),
        "later.test.: {l}"
    );
    assert!((metric(admin, "soon.test.") - s).abs() < 600.0);
    // logged for the zone expiring within a day only
    const SOON: &str = "zone signatures expire soon";
    e.wait_log(SOON, 1, Duration::from_secs(10));
    let log = e.log();
    let line = log.lines().find(|l| l.contains(SOON)).unwrap();
    assert!(line.contains("soon.test."), "{line}");
    assert!(
        !log.lines().any(|l| l.contains(SOON) && l.contains("later.test.")),
        "{log}"
    );
    // a new version, still expiring soon: not logged again
    let (st, body) = http(admin, "POST", "/api/v1/dns/zones/soon.test./reload", Some(TOKEN));
    assert_eq!(st, 200, "{body}");
    anyedge_testkit::holds_for("one warning while the state stays", Duration::from_secs(2), || {
        e.log().matches(SOON).count() == 1
    });
    // re-signed for ten days: fresh again, logged once
    signed_zone(d, "soon.test.", &soon_key, 10 * 86400);
    let (st, body) = http(admin, "POST", "/api/v1/dns/zones/soon.test./reload", Some(TOKEN));
    assert_eq!(st, 200, "{body}");
    e.wait_log("zone signatures are fresh again", 1, Duration::from_secs(10));
    assert!(status_expiry(admin, "soon.test.") > 9.0 * 86400.0);
}
