//! Shared by the integration tests: the environment checks (fail loudly
//! under CI, skip with a message elsewhere), `BPF_PROG_TEST_RUN` on crafted
//! frames and frame builders (network namespaces: the `anyedge-netns` crate).
#![allow(dead_code, unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use anyedge_xdp::{Counter, Counters, Error, Options, Rate, Xdp};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// When a test cannot run here: under CI (`CI` set) that is a failure,
/// elsewhere the test is skipped with a message. Returns normally only when
/// skipping.
pub fn cannot_run(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot run under CI: {why}");
    }
    eprintln!("SKIPPED (set CI=1 to make this a failure): {why}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The program loaded with `options`, or None (after [`cannot_run`]) when
/// this machine or build cannot load it.
pub fn load_with(options: &Options) -> Option<Xdp> {
    if !is_root() {
        cannot_run("loading XDP programs needs root (CAP_BPF, CAP_NET_ADMIN)");
        return None;
    }
    match Xdp::load(options) {
        Ok(x) => Some(x),
        Err(e @ Error::Unavailable(_)) => {
            cannot_run(&format!("{e} (apt-get install clang libbpf-dev, then rebuild)"));
            None
        }
        Err(e) => panic!("loading the XDP program failed: {e}"),
    }
}

pub fn load() -> Option<Xdp> {
    load_with(&Options::default())
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN` (the `test` member).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs `attr` (`BPF_PROG_TEST_RUN`); the kernel fills in its results.
fn test_run_attr(attr: &mut TestRunAttr) {
    // SAFETY: `attr` is a properly initialized, live `bpf_attr` prefix of
    // the size passed. Every caller points `data_in` (and `ctx_in`, if set)
    // at buffers of the sizes given that outlive the call and are only read,
    // and `data_out` (if set) at a buffer writable for `data_size_out` bytes,
    // which the kernel does not exceed (it reports the needed size and fails
    // with ENOSPC instead); with `data_out` and `ctx_out` null the kernel
    // writes nothing but `attr` itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            std::ptr::from_mut(attr),
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
}

/// Runs the program `repeat` times (at least once) on `frame` in the
/// kernel, without any interface; returns the last XDP action.
pub fn test_run_repeat(fd: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> u32 {
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd.as_raw_fd()).expect("fd"),
        data_size_in: u32::try_from(frame.len()).expect("frame size"),
        data_in: frame.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    test_run_attr(&mut attr);
    attr.retval
}

/// `struct xdp_md` of a frame received on interface `ifindex`: data,
/// data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
fn xdp_md(frame: &[u8], ifindex: u32) -> [u32; 6] {
    [0, u32::try_from(frame.len()).expect("frame size"), 0, ifindex, 0, 0]
}

/// Runs the program once on `frame` as received on interface `ifindex`
/// (of the calling thread's network namespace); returns the XDP action and
/// the frame as the program left it.
pub fn test_run_io(fd: BorrowedFd<'_>, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    let ctx = xdp_md(frame, ifindex);
    let mut out = vec![0u8; frame.len() + 512];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd.as_raw_fd()).expect("fd"),
        data_size_in: u32::try_from(frame.len()).expect("frame size"),
        data_size_out: u32::try_from(out.len()).expect("out size"),
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: 24,
        ctx_in: ctx.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    test_run_attr(&mut attr);
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

/// Runs the program once on `frame` as received on interface `ifindex`,
/// without reading the frame back; returns the XDP action and the run's
/// duration in nanoseconds, as the kernel measured it.
pub fn test_run_timed(fd: BorrowedFd<'_>, frame: &[u8], ifindex: u32) -> (u32, u32) {
    let ctx = xdp_md(frame, ifindex);
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd.as_raw_fd()).expect("fd"),
        data_size_in: u32::try_from(frame.len()).expect("frame size"),
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ctx_size_in: 24,
        ctx_in: ctx.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    test_run_attr(&mut attr);
    (attr.retval, attr.duration)
}

pub fn test_run(x: &Xdp, frame: &[u8]) -> u32 {
    test_run_repeat(x.program_fd().expect("program fd"), frame, 1)
}

/// Runs `frame` once; returns the action and the one counter it bumped
/// (asserting it bumped exactly one, by one).
pub fn judge(x: &Xdp, frame: &[u8]) -> (u32, Counter) {
    let before = x.counters().expect("counters");
    let action = test_run(x, frame);
    let delta = x.counters().expect("counters").since(&before);
    let bumped: Vec<(Counter, u64)> = delta.iter().filter(|(_, n)| *n > 0).collect();
    assert!(
        bumped.len() == 1 && bumped[0].1 == 1,
        "one frame must bump exactly one counter: {bumped:?}"
    );
    let c = bumped[0].0;
    assert_eq!(action == XDP_DROP, c.is_drop(), "action {action} vs counter {c:?}");
    (action, c)
}

pub fn delta(x: &Xdp, before: &Counters) -> Counters {
    x.counters().expect("counters").since(before)
}

/// A token bucket for the `Rates` fields.
pub const fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    Some(Rate { per_second, burst })
}

/// TCP flags byte.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

#[derive(Debug, Clone, Copy)]
pub enum L4 {
    Tcp { dport: u16, flags: u8 },
    Udp { dport: u16, payload: usize },
    Icmp,
}

/// A frame to build: Ethernet (optionally one VLAN tag), IPv4 or IPv6 by
/// the source address family, L4.
#[derive(Debug, Clone)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// VLAN TPID (0x8100 or 0x88a8) and VLAN id.
    pub vlan: Option<(u16, u16)>,
    /// (fragment offset in 8-byte units, more fragments): IPv4 flags, or an
    /// IPv6 fragment header.
    pub fragment: Option<(u16, bool)>,
    /// IPv6 extension headers before the L4 (or fragment) header, by type:
    /// 0 hop-by-hop, 43 routing, 60 destination options, 51 AH.
    pub ext: Vec<u8>,
    /// IPv4 options (NOPs), in 4-byte words.
    pub ip_options: u8,
    /// Cut the frame this many bytes short.
    pub truncate: usize,
}

impl Frame {
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Frame {
        Frame {
            src,
            dst,
            l4,
            vlan: None,
            fragment: None,
            ext: Vec::new(),
            ip_options: 0,
            truncate: 0,
        }
    }

    pub fn syn(src: IpAddr, dst: IpAddr, dport: u16) -> Frame {
        Frame::new(src, dst, L4::Tcp { dport, flags: SYN })
    }

    pub fn ack(src: IpAddr, dst: IpAddr, dport: u16) -> Frame {
        Frame::new(src, dst, L4::Tcp { dport, flags: ACK })
    }

    pub fn udp(src: IpAddr, dst: IpAddr, dport: u16) -> Frame {
        Frame::new(src, dst, L4::Udp { dport, payload: 32 })
    }

    pub fn vlan(mut self, tpid: u16, id: u16) -> Frame {
        self.vlan = Some((tpid, id));
        self
    }

    pub fn fragment(mut self, offset: u16, more: bool) -> Frame {
        self.fragment = Some((offset, more));
        self
    }

    pub fn ext(mut self, types: &[u8]) -> Frame {
        self.ext = types.to_vec();
        self
    }

    pub fn ip_options(mut self, words: u8) -> Frame {
        self.ip_options = words;
        self
    }

    pub fn truncate(mut self, n: usize) -> Frame {
        self.truncate = n;
        self
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        match self.l4 {
            L4::Tcp { dport, flags } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&40000u16.to_be_bytes());
                t[2..4].copy_from_slice(&dport.to_be_bytes());
                t[4..8].copy_from_slice(&1u32.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                (6, t)
            }
            L4::Udp { dport, payload } => {
                let mut u = vec![0u8; 8 + payload];
                u[0..2].copy_from_slice(&40000u16.to_be_bytes());
                u[2..4].copy_from_slice(&dport.to_be_bytes());
                let len = u16::try_from(8 + payload).expect("udp length");
                u[4..6].copy_from_slice(&len.to_be_bytes());
                (17, u)
            }
            L4::Icmp => {
                let proto = if self.src.is_ipv4() { 1 } else { 58 };
                (proto, vec![8, 0, 0, 0, 0, 1, 0, 1])
            }
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        if let Some((tpid, id)) = self.vlan {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        let (proto, l4) = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&ipv4_header(s, d, proto, l4.len(), self.fragment, self.ip_options));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut chain: Vec<(u8, Vec<u8>)> = self.ext.iter().map(|&t| (t, ext_header(t))).collect();
                if let Some((offset, more)) = self.fragment {
                    let mut h = vec![0u8; 8];
                    h[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                    h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                    chain.push((44, h));
                }
                let mut body = Vec::new();
                for (i, (_, h)) in chain.iter().enumerate() {
                    let mut h = h.clone();
                    h[0] = chain.get(i + 1).map_or(proto, |(t, _)| *t);
                    body.extend_from_slice(&h);
                }
                body.extend_from_slice(&l4);
                let first = chain.first().map_or(proto, |(t, _)| *t);
                f.extend_from_slice(&ipv6_header(s, d, first, body.len()));
                f.extend_from_slice(&body);
                f.truncate(f.len() - self.truncate.min(f.len()));
                return f;
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&l4);
        f.truncate(f.len() - self.truncate.min(f.len()));
        f
    }
}

pub fn ipv4_header(
    s: Ipv4Addr,
    d: Ipv4Addr,
    proto: u8,
    l4_len: usize,
    fragment: Option<(u16, bool)>,
    option_words: u8,
) -> Vec<u8> {
    let hlen = 20 + 4 * usize::from(option_words);
    let mut h = vec![1u8; hlen]; // options: NOP
    h[..20].fill(0);
    h[0] = 0x40 | (5 + option_words);
    let total = u16::try_from(hlen + l4_len).expect("length");
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    let frag = match fragment {
        Some((offset, more)) => (offset & 0x1fff) | if more { 0x2000 } else { 0 },
        None => 0x4000, // DF
    };
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&s.octets());
    h[16..20].copy_from_slice(&d.octets());
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

pub fn ipv6_header(s: Ipv6Addr, d: Ipv6Addr, next: u8, payload: usize) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&u16::try_from(payload).expect("length").to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&s.octets());
    h[24..40].copy_from_slice(&d.octets());
    h
}

/// An extension header of type `t` (next header filled in later): 8 bytes,
/// or 16 for a routing header and AH, to exercise the length fields.
fn ext_header(t: u8) -> Vec<u8> {
    match t {
        // AH: length in 4-byte units minus 2: 16 bytes -> 2
        51 => {
            let mut h = vec![0u8; 16];
            h[1] = 2;
            h
        }
        // routing: length in 8-byte units minus 1: 16 bytes -> 1
        43 => {
            let mut h = vec![0u8; 16];
            h[1] = 1;
            h
        }
        // hop-by-hop and destination options: one PadN filling 6 bytes
        _ => vec![0, 0, 1, 4, 0, 0, 0, 0],
    }
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0u8; 20]);
    f
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i > 0, "no interface {name}");
    i
}
