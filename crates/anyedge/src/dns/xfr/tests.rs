//! Transfers and NOTIFY between daemons on loopback: primary, secondary and
//! a secondary of the secondary; the transfer and NOTIFY policy; expiry.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyedge_dns::answer::{RCODE_NOERROR, RCODE_NOTAUTH, RCODE_REFUSED};
use anyedge_dns::xfr::{self, Journal};
use anyedge_dns::zone::Zone;
use domain::tsig::Key;

use super::serve::{prepare, Prepared};
use super::tsig::make_key;
use super::{notify, signed_soa, time48};
use crate::config::{DnsConfig, TsigAlgorithm, TsigKey, ZoneConfig, ZoneSource};
use crate::dns::Dns;

const ZONE_V1: &str = "$ORIGIN example.com.\n$TTL 3600\n\
    @ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n\
    @ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN A 192.0.2.10\n";
const APEX: &[u8] = b"\x07example\x03com\x00";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn tsig(secret: &[u8]) -> TsigKey {
    TsigKey {
        name: "xfr-key.".into(),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: secret.to_vec(),
    }
}

fn cfg(listen: SocketAddr, zone: ZoneConfig) -> DnsConfig {
    DnsConfig {
        listen: vec![listen],
        workers: NonZeroU32::new(1),
        nsid: None,
        udp_payload: 1232,
        tcp_idle_timeout: Duration::from_secs(10),
        tcp_max_connections: NonZeroU32::new(64).unwrap(),
        tcp_limits: Default::default(),
        cookies: None,
        rrl: None,
        tsig_keys: vec![tsig(SECRET)],
        zones: vec![zone],
        state_dir: None,
        dnstap: None,
    }
}

fn primary_zone(file: &std::path::Path, notify: Vec<SocketAddr>) -> ZoneConfig {
    ZoneConfig {
        name: "example.com.".into(),
        source: ZoneSource::File(file.to_path_buf()),
        key: Some("xfr-key.".into()),
        notify,
        dnssec: None,
        allow_transfer: vec!["127.0.0.1/32".parse().unwrap()],
    }
}

fn secondary_zone(primary: SocketAddr) -> ZoneConfig {
    ZoneConfig {
        name: "example.com.".into(),
        source: ZoneSource::Secondary {
            primaries: vec![primary],
        },
        key: Some("xfr-key.".into()),
        notify: vec![],
        dnssec: None,
        allow_transfer: vec![],
    }
}

/// A secondary that its own secondary at `downstream` transfers from.
fn middle_zone(primary: SocketAddr, downstream: SocketAddr) -> ZoneConfig {
    ZoneConfig {
        notify: vec![downstream],
        allow_transfer: vec!["127.0.0.1/32".parse().unwrap()],
        ..secondary_zone(primary)
    }
}

fn key(secret: &[u8]) -> Arc<Key> {
    Arc::new(make_key(&tsig(secret)).unwrap())
}

async fn wait_serial(dns: &Dns, serial: u32) -> Arc<Zone> {
    let t = Instant::now();
    loop {
        if let Some(z) = dns.zones.load().get(APEX) {
            if z.serial == serial {
                return z.clone();
            }
        }
        assert!(t.elapsed() < Duration::from_secs(15), "serial {serial} never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rcode(m: &[u8]) -> u8 {
    m[3] & 0x0f
}

async fn stop(d: Arc<Dns>) {
    tokio::task::spawn_blocking(move || d.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_follows_primary_by_notify_and_ixfr() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.com.zone");
    std::fs::write(&file, ZONE_V1).unwrap();
    let (pa, sa, ta) = (free_addr(), free_addr(), free_addr());
    let primary = Dns::start(&cfg(pa, primary_zone(&file, vec![sa])), "p", 1, &[]).unwrap();
    let secondary = Dns::start(&cfg(sa, middle_zone(pa, ta)), "s", 1, &[]).unwrap();
    let z1 = wait_serial(&secondary, 1).await;
    assert_eq!(z1.records, 4);
    assert_eq!(secondary.xfr.axfr_in.load(Ordering::Relaxed), 1);
    // the status says how and when each version came
    let st = &primary.zone_status()[0];
    assert_eq!((st.loaded_by, st.refreshed_unix), (Some("file"), None), "{st:?}");
    let st = &secondary.zone_status()[0];
    assert_eq!(st.loaded_by, Some("axfr"), "{st:?}");
    let loaded = st.loaded_unix.expect("load time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(loaded > 1_600_000_000 && loaded <= now, "{st:?}");
    // the refresh check is recorded right after the install
    let t = Instant::now();
    while secondary.zone_status()[0].refreshed_unix.is_none() {
        assert!(t.elapsed() < Duration::from_secs(15), "refresh time never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(secondary.zone_status()[0].refreshed_unix >= Some(loaded));
    // a secondary of the secondary
    let tertiary = Dns::start(&cfg(ta, secondary_zone(sa)), "t", 1, &[]).unwrap();
    wait_serial(&tertiary, 1).await;

    // a new serial on the primary: NOTIFY, then an IXFR from its journal
    let v2 = ZONE_V1
        .replace(" 1 7200 ", " 2 7200 ")
        .replace("192.0.2.10", "192.0.2.11")
        + "new IN A 192.0.2.99\n";
    std::fs::write(&file, v2).unwrap();
    assert_eq!(primary.reload_zone("example.com").unwrap(), 2);
    let z2 = wait_serial(&secondary, 2).await;
    assert_eq!(secondary.xfr.ixfr_in.load(Ordering::Relaxed), 1);
    assert_eq!(secondary.zone_status()[0].loaded_by, Some("ixfr"));
    assert_eq!(secondary.zone_status()[0].serial, 2);
    assert_eq!(secondary.xfr.axfr_in.load(Ordering::Relaxed), 1);
    assert!(z2.node(b"\x03new\x07example\x03com\x00").is_some());
    let www = z2.node(b"\x03www\x07example\x03com\x00").unwrap().get(1).unwrap();
    assert_eq!(&www.rdata[0].wire[..], &[192, 0, 2, 11]);
    assert_eq!(
        primary.xfr.journals.lock().unwrap().get(APEX).map(Journal::len),
        Some(1)
    );
    // the secondary's journal has the difference too: its own secondary,
    // NOTIFYed, gets it as an IXFR
    assert_eq!(
        secondary.xfr.journals.lock().unwrap().get(APEX).map(Journal::len),
        Some(1)
    );
    let z3 = wait_serial(&tertiary, 2).await;
    assert_eq!(tertiary.xfr.ixfr_in.load(Ordering::Relaxed), 1);
    assert!(z3.node(b"\x03new\x07example\x03com\x00").is_some());
    stop(primary).await;
    stop(secondary).await;
    stop(tertiary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_and_notify_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.com.zone");
    std::fs::write(&file, ZONE_V1).unwrap();
    let (pa, sa) = (free_addr(), free_addr());
    let primary = Dns::start(&cfg(pa, primary_zone(&file, vec![])), "p", 1, &[]).unwrap();
    let here = SocketAddr::from(([127, 0, 0, 1], 5353));
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 5353));
    let axfr = |k: Option<Arc<Key>>| xfr::build_query(7, APEX, xfr::T_AXFR, None, k, time48()).unwrap().0;
    let reply_of = |p: Prepared| match p {
        Prepared::Reply(r) => r,
        Prepared::Serve { .. } => panic!("transfer allowed"),
    };
    // unsigned, though the zone has a key
    assert_eq!(rcode(&reply_of(prepare(&primary, &axfr(None), here))), RCODE_REFUSED);
    // a wrong secret: NOTAUTH (TSIG error BADSIG)
    let r = reply_of(prepare(
        &primary,
        &axfr(Some(key(b"fedcba9876543210fedcba9876543210"))),
        here,
    ));
    assert_eq!(rcode(&r), RCODE_NOTAUTH);
    // signed, but not in allow_transfer
    assert_eq!(
        rcode(&reply_of(prepare(&primary, &axfr(Some(key(SECRET))), elsewhere))),
        RCODE_REFUSED
    );
    // another zone
    let other = xfr::build_query::<Arc<Key>>(8, b"\x07example\x03org\x00", xfr::T_AXFR, None, None, time48())
        .unwrap()
        .0;
    assert_eq!(rcode(&reply_of(prepare(&primary, &other, here))), RCODE_NOTAUTH);
    // allowed
    match prepare(&primary, &axfr(Some(key(SECRET))), here) {
        Prepared::Serve { plan, seq, .. } => {
            assert_eq!(plan.kind(), "AXFR");
            assert!(seq.is_some());
        }
        Prepared::Reply(_) => panic!("transfer refused"),
    }

    // a signed SOA query is answered, signed; an unsigned one is not ours
    let soa_q = |k: Option<Arc<Key>>| xfr::build_query(10, APEX, 6, None, k, time48()).unwrap().0;
    let mut out = Vec::new();
    assert!(signed_soa(&primary, &soa_q(Some(key(SECRET))), here, &mut out));
    assert_eq!(rcode(&out), RCODE_NOERROR);
    assert!(signed_soa(
        &primary,
        &soa_q(Some(key(b"fedcba9876543210fedcba9876543210"))),
        here,
        &mut out
    ));
    assert_eq!(rcode(&out), RCODE_NOTAUTH);
    assert!(!signed_soa(&primary, &soa_q(None), here, &mut out));

    // NOTIFY: from the primary's address and signed, or refused
    let secondary = Dns::start(&cfg(sa, secondary_zone(pa)), "s", 1, &[]).unwrap();
    wait_serial(&secondary, 1).await;
    let soa = xfr::zone_soa(&secondary.zones.load().get(APEX).unwrap().clone()).unwrap();
    let n = |k: Option<Arc<Key>>| xfr::build_notify(9, APEX, Some(&soa), k, time48()).unwrap().0;
    let mut out = Vec::new();
    notify(&secondary, &n(None), here, &mut out);
    assert_eq!(rcode(&out), RCODE_REFUSED);
    notify(&secondary, &n(Some(key(SECRET))), elsewhere, &mut out);
    assert_eq!(rcode(&out), RCODE_REFUSED);
    notify(&secondary, &n(Some(key(SECRET))), here, &mut out);
    assert_eq!(rcode(&out), RCODE_NOERROR);
    assert_eq!(out[2] & 0x84, 0x84, "QR and AA");
    assert_eq!((out[2] >> 3) & 0x0f, 4, "opcode NOTIFY");
    // the primary is not a secondary of its own zone
    notify(&primary, &n(Some(key(SECRET))), here, &mut out);
    assert_eq!(rcode(&out), RCODE_REFUSED);
    stop(primary).await;
    stop(secondary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_expires_when_its_primary_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.com.zone");
    // refresh 2 s, retry 1 s, expire 3 s (the smallest the clamps allow)
    std::fs::write(&file, ZONE_V1.replace(" 1 7200 3600 1209600 300", " 1 2 1 3 300")).unwrap();
    let (pa, sa) = (free_addr(), free_addr());
    let primary = Dns::start(&cfg(pa, primary_zone(&file, vec![])), "p", 1, &[]).unwrap();
    let secondary = Dns::start(&cfg(sa, secondary_zone(pa)), "s", 1, &[]).unwrap();
    wait_serial(&secondary, 1).await;
    let st = secondary.zone_status();
    let left = st[0].expires_in_seconds.expect("a transferred zone has an expiry");
    assert!(left > 0.0 && left <= 3.0, "expires in {left} s (SOA expire 3 s)");
    assert_eq!(st[0].load_failures, 0);
    let t = Instant::now();
    stop(primary).await;
    while secondary.zones.load().get(APEX).is_some() {
        assert!(t.elapsed() < Duration::from_secs(10), "the zone never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "expired early: {:?}",
        t.elapsed()
    );
    let status = secondary.zone_status();
    assert!(
        status[0].error.as_deref().is_some_and(|e| e.starts_with("expired")),
        "{:?}",
        status[0].error
    );
    assert_eq!(status[0].expires_in_seconds, Some(0.0));
    assert!(status[0].load_failures >= 1, "failed refreshes are counted");
    stop(secondary).await;
}

#[test]
fn keys_for_every_algorithm() {
    for a in [
        TsigAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha384,
        TsigAlgorithm::HmacSha512,
    ] {
        let k = make_key(&TsigKey {
            algorithm: a,
            ..tsig(SECRET)
        })
        .unwrap();
        assert_eq!(k.name().to_string(), "xfr-key");
    }
}
