//! Time of applying a re-signing IXFR to a big signed zone: the rebuild
//! from all records (how IXFRs were applied before) against the
//! incremental application. Run by `bench/dns_ixfr_apply.sh`:
//!
//!     ixfr_apply ZONEFILE ORIGIN nsec|nsec3 RRSIGS RUNS
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use anyedge_dns::sign::{sign_zone, Algorithm, DenialMode, Policy, SigningKey};
use anyedge_dns::xfr::{apply_at, rebuild, zone_soa, Diff, Rr};
use anyedge_dns::zone::T_RRSIG;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (file, origin, mode) = (&a[1], &a[2], &a[3]);
    let churn: usize = a[4].parse().unwrap();
    let runs: usize = a[5].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (ksk, _) = SigningKey::generate(Algorithm::EcdsaP256Sha256, true).unwrap();
    let (zsk, _) = SigningKey::generate(Algorithm::Ed25519, false).unwrap();
    let policy = Policy {
        keys: vec![Arc::new(ksk), Arc::new(zsk)],
        denial: if mode == "nsec" {
            DenialMode::Nsec
        } else {
            DenialMode::Nsec3
        },
        validity: 14 * 86400,
    };
    let t = Instant::now();
    let b = anyedge_dns::zone::load_file_records(std::path::Path::new(file), origin).unwrap();
    let z = sign_zone(b, &policy, None, now).unwrap();
    let signing = t.elapsed().as_secs_f64();
    // the re-signing difference: `churn` RRSIGs replaced by ones expiring a
    // day later (new signature bytes; structure is all the load checks)
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for (owner, set) in z.iter_records() {
        if set.rtype != T_RRSIG || set.rdata.first().is_some_and(|r| r.wire[..2] == [0, 6]) {
            continue;
        }
        for rd in &set.rdata {
            if removed.len() == churn {
                break;
            }
            let mut new = rd.wire.to_vec();
            let e = u32::from_be_bytes([new[8], new[9], new[10], new[11]]) + 86400;
            new[8..12].copy_from_slice(&e.to_be_bytes());
            if let Some(l) = new.last_mut() {
                *l ^= 0x5a;
            }
            let rr = |rdata: Box<[u8]>| Rr {
                owner: owner.into(),
                rtype: T_RRSIG,
                ttl: set.ttl,
                rdata,
            };
            removed.push(rr(rd.wire.clone()));
            added.push(rr(new.into()));
        }
    }
    let old_soa = zone_soa(&z).unwrap();
    let mut new_soa = old_soa.clone();
    let l1 = anyedge_dns::name::wire_len(&new_soa.rdata).unwrap();
    let l2 = anyedge_dns::name::wire_len(&new_soa.rdata[l1..]).unwrap();
    let at = l1 + l2;
    let s = u32::from_be_bytes(new_soa.rdata[at..at + 4].try_into().unwrap()) + 1;
    new_soa.rdata[at..at + 4].copy_from_slice(&s.to_be_bytes());
    let d = Diff {
        old_soa,
        new_soa,
        removed,
        added,
    };
    let ds = std::slice::from_ref(&d);
    let a1 = apply_at(&z, ds, now).unwrap();
    let r1 = rebuild(&z, ds, now).unwrap();
    assert_eq!(a1.dump(), r1.dump(), "incremental and rebuilt versions differ");
    assert_eq!(a1.dnssec, r1.dnssec, "indexes differ");
    let time = |f: &dyn Fn()| -> f64 {
        median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect(),
        )
    };
    let rb = time(&|| drop(rebuild(&z, ds, now).unwrap()));
    let inc = time(&|| drop(apply_at(&z, ds, now).unwrap()));
    println!(
        "zone {origin} {mode}: {} records ({} names, {} NSEC3 owners), signed in {signing:.1} s; IXFR replacing {} RRSIGs",
        z.records,
        z.nodes.len(),
        z.nsec3_nodes.len(),
        d.removed.len()
    );
    println!("rebuild     median {rb:9.2} ms  ({runs} runs)");
    println!("incremental median {inc:9.2} ms  ({runs} runs)");
    println!("speedup     {:9.1}x", rb / inc);
}
