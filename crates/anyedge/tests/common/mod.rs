//! Shared helpers for integration tests: start the real `anyedge` binary and
//! real nginx instances, each ended by the PID we started.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;

/// A port nothing listens on now, never handed out before in this test
/// process: the kernel may give the same ephemeral port to two binds in a
/// row once the first listener is closed, and one config taking it twice
/// (say `dns.listen` and `admin.listen`) is refused.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn wait_port(addr: SocketAddr, max: Duration) {
    let start = Instant::now();
    while start.elapsed() < max {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on {addr} after {max:?}");
}

/// The nginx binary, or a panic telling how to get it (CI installs it).
pub fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx not found: install it (apt-get install nginx); .ci/run does");
}

/// A real nginx with `listen ... proxy_protocol`, single process (no master)
/// so that killing our PID kills the server.
pub struct Nginx {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(name: &str, port: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Nginx {
            name: name.to_string(),
            port,
            dir,
            child: None,
        };
        n.write_conf();
        n.spawn();
        n
    }

    fn write_conf(&self) {
        let d = self.dir.path().display();
        std::fs::create_dir_all(self.dir.path().join("tmp")).unwrap();
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location /healthz {{ return 200 "ok\n"; }}
        location / {{
            return 200 "backend={name} proxy_addr=$proxy_protocol_addr proxy_port=$proxy_protocol_port server_addr=$proxy_protocol_server_addr server_port=$proxy_protocol_server_port\n";
        }}
    }}
}}
"#,
            port = self.port,
            name = self.name
        );
        std::fs::write(self.dir.path().join("nginx.conf"), conf).unwrap();
    }

    pub fn spawn(&mut self) {
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        self.child = Some(child);
        wait_port(SocketAddr::from(([127, 0, 0, 1], self.port)), Duration::from_secs(10));
    }

    /// SIGKILL to the PID we started.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real `anyedge` binary built by cargo for this test run.
pub struct Anyedge {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Anyedge {
    pub fn start(config: &str, wait_for: SocketAddr) -> Anyedge {
        let a = Anyedge::spawn(Command::new(env!("CARGO_BIN_EXE_anyedge")), config);
        wait_port(wait_for, Duration::from_secs(10));
        a.wait_ready();
        a
    }

    /// Waits for the "ready" line, logged once everything is serving: a
    /// service port accepts before the admin API (started last) listens.
    pub fn wait_ready(&self) {
        self.wait_log("ready listen=", 1, Duration::from_secs(20));
    }

    /// Runs anyedge inside network namespace `ns` and waits, from inside it,
    /// until `wait_for` accepts connections.
    pub fn start_in(ns: &anyedge_netns::Netns, config: &str, wait_for: SocketAddr) -> Anyedge {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_anyedge"));
        cmd.env("RUST_LOG", "info");
        let a = Anyedge::spawn(cmd, config);
        ns.enter(move || wait_port(wait_for, Duration::from_secs(10)));
        a.wait_ready();
        a
    }

    /// `cmd` is the program (or a wrapper that execs it, like `ip netns exec`).
    pub fn spawn(mut cmd: Command, config: &str) -> Anyedge {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anyedge.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("anyedge.log")).unwrap();
        let child = cmd
            .arg("run")
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start anyedge");
        Anyedge {
            dir,
            config: path,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("anyedge.log")).unwrap_or_default()
    }

    /// The PID of the new process that the `round`th binary upgrade
    /// (counting from 1) logged.
    pub fn new_pid(&self, round: usize) -> i32 {
        self.log()
            .split("new_pid=")
            .nth(round)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("new PID logged")
    }

    /// Waits until the log contains `needle` `count` times; returns the time waited.
    pub fn wait_log(&self, needle: &str, count: usize, max: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < max {
            if self.log().matches(needle).count() >= count {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("log never had {count}x {needle:?} within {max:?}:\n{}", self.log());
    }

    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    pub fn wait_exit(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < max {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Anyedge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- anyedge log ----\n{}", self.log());
        }
    }
}

/// One HTTP/1.0-style GET over a fresh connection from source IP `src`
/// (any 127.x.y.z works on Linux loopback). Returns (local port, body).
pub fn get_from(src: Ipv4Addr, target: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.connect_timeout(&target.into(), Duration::from_secs(2))?;
    let mut s: TcpStream = sock.into();
    let port = s.local_addr()?.port();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {resp:?}")))?;
    if !resp.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("bad response: {resp:?}")));
    }
    Ok((port, body))
}

pub fn get(target: SocketAddr) -> std::io::Result<(u16, String)> {
    get_from(Ipv4Addr::new(127, 0, 0, 1), target, "/")
}

/// Parses `key=value` pairs from an nginx test body.
pub fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("")
}

/// A backend on 127.0.0.1 that requires a PROXY header (like nginx with
/// `listen ... proxy_protocol`), reads the request head and answers 200 with
/// `body`, one thread per connection.
pub fn proxy_backend(body: String) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    serve_proxied(l, body, |_| {});
    a
}

/// Serves `l` in the background, one thread per connection: reads a PROXY
/// header and the request head after it, shows the header to `on_header`,
/// and answers 200 with `body`. A connection that closes (or stays silent
/// for 5 s) before both arrived gets no answer.
pub fn serve_proxied<F>(l: TcpListener, body: String, on_header: F)
where
    F: Fn(&anyedge_proxy::Header<'_>) + Clone + Send + 'static,
{
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let body = body.clone();
            let on_header = on_header.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Ok(anyedge_proxy::Decoded::Complete { len, header }) = anyedge_proxy::decode(&buf, 4096) {
                        if buf[len..].windows(4).any(|w| w == b"\r\n\r\n") {
                            on_header(&header);
                            break;
                        }
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

/// A service's `[service.health]`: TCP checks every 200 ms, up after one.
pub const FAST_TCP_HEALTH: &str = r#"[service.health]
kind = "tcp"
interval = "200ms"
timeout = "100ms"
rise = 1"#;

/// A `[[service]]` "web" on 127.0.0.1:`lb`, round robin over backends `a`
/// and `b` (`b_extra`: more lines for `b`), with fast TCP health checks.
pub fn round_robin_web(lb: u16, a: SocketAddr, b: SocketAddr, b_extra: &str) -> String {
    format!(
        r#"[[service]]
name = "web"
listen = ["127.0.0.1:{lb}"]
balance = "round_robin"
{FAST_TCP_HEALTH}
[[service.backend]]
name = "a"
address = "{a}"
[[service.backend]]
name = "b"
address = "{b}"
{b_extra}
"#
    )
}

/// The `[service.health]` (TCP checks, fast) and `[[service.backend]]`
/// sections of a service with the one backend `b` at `address`.
pub fn health_and_backend(address: impl std::fmt::Display) -> String {
    format!(
        r#"{FAST_TCP_HEALTH}
send_proxy = false
[[service.backend]]
name = "b"
address = "{address}""#
    )
}

/// A minimal HTTP/1.1 request (admin API); returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn name_wire(n: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// A DNS query; `opts` are EDNS options (an OPT record is added if any, or if
/// `edns`).
pub fn dns_query(id: u16, name: &str, qtype: u16, edns: bool, opts: &[(u16, &[u8])]) -> Vec<u8> {
    let edns = edns || !opts.is_empty();
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    p.extend_from_slice(&name_wire(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        let o: Vec<u8> = opts
            .iter()
            .flat_map(|(c, d)| [&c.to_be_bytes()[..], &(d.len() as u16).to_be_bytes()[..], d].concat())
            .collect();
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        p.extend_from_slice(&(o.len() as u16).to_be_bytes());
        p.extend_from_slice(&o);
    }
    p
}
