//! Batched UDP I/O for the DNS hot path: `recvmmsg(2)` in, `sendmmsg(2)`
//! out, up to [`BATCH`] datagrams per system call, with buffers allocated
//! once per thread. Raw `libc` because the wrappers in `nix` tie buffer and
//! header lifetimes together in a way that forces re-allocation per batch.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

pub const BATCH: usize = 32;
/// Largest query we read (EDNS queries with TSIG fit easily).
pub const RX_SIZE: usize = 4096;

pub struct Batch {
    rx: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    /// Response per slot (empty: nothing to send).
    pub out: Vec<Vec<u8>>,
    n: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            rx: vec![0u8; RX_SIZE * BATCH],
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            addrs: unsafe { zeroed() },
            out: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            n: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    /// Datagram `i`, the source, and its response buffer, at once.
    pub fn slot(&mut self, i: usize) -> Option<(&[u8], SocketAddr, &mut Vec<u8>)> {
        let src = to_std(&self.addrs[i])?;
        let data = self.rx.get(i * RX_SIZE..i * RX_SIZE + self.lens[i])?;
        let out = self.out.get_mut(i)?;
        Some((data, src, out))
    }

    /// Waits for at least one datagram (up to the socket's receive timeout),
    /// then takes whatever else is queued, up to [`BATCH`].
    pub fn recv(&mut self, sock: &std::net::UdpSocket) -> io::Result<usize> {
        // SAFETY: mmsghdr/iovec are plain old data; all-zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = self.rx[i * RX_SIZE..].as_mut_ptr().cast();
            iov[i].iov_len = RX_SIZE;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points at a live iovec (in `iov`) covering
        // RX_SIZE bytes of `self.rx`, and at a sockaddr_storage in
        // `self.addrs` with its true size; all outlive the call. The kernel
        // writes at most BATCH entries.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.n = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = h.msg_len as usize;
        }
        self.n = n;
        Ok(n)
    }

    /// Sends every non-empty response back to its source.
    pub fn send(&mut self, sock: &std::net::UdpSocket) {
        // SAFETY: plain old data; all-zero is valid.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut k = 0usize;
        for i in 0..self.n {
            if self.out[i].is_empty() {
                continue;
            }
            iov[k].iov_base = self.out[i].as_mut_ptr().cast();
            iov[k].iov_len = self.out[i].len();
            hdrs[k].msg_hdr.msg_iov = &mut iov[k];
            hdrs[k].msg_hdr.msg_iovlen = 1;
            hdrs[k].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[k].msg_hdr.msg_namelen = addr_len(&self.addrs[i]);
            k += 1;
        }
        let mut sent = 0usize;
        while sent < k {
            // SAFETY: headers [sent, k) point at live iovecs over the
            // response buffers and at the source addresses with their sizes.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs[sent..].as_mut_ptr(),
                    (k - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // e.g. EAGAIN on a full send buffer: drop the rest (UDP)
                break;
            }
            sent += r as usize;
        }
        for o in self.out.iter_mut().take(self.n) {
            o.clear();
        }
    }
}

fn addr_len(s: &libc::sockaddr_storage) -> libc::socklen_t {
    match s.ss_family as i32 {
        libc::AF_INET => size_of::<libc::sockaddr_in>() as libc::socklen_t,
        _ => size_of::<libc::sockaddr_in6>() as libc::socklen_t,
    }
}

fn to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in,
            // which is smaller than sockaddr_storage and has no invalid
            // bit patterns.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
