//! `anyedge lab up|down|status`: a multi-PoP anycast network on one machine,
//! in network namespaces joined by veth pairs (root needed). The same
//! topology drives the end-to-end tests and `bench/failover.sh`.
//!
//! ```text
//!                    client 198.18.10.2
//!                         │
//!          router (BIRD 2, AS 65000, BFD, ECMP) 198.18.10.1
//!            │ 198.18.1.1                 │ 198.18.2.1
//!  pop1 198.18.1.2 (AS 65001)    pop2 198.18.2.2 (AS 65001)
//!  anycast 192.0.2.10/32         anycast 192.0.2.10/32
//!  2001:db8:a::10/128 on lo      2001:db8:a::10/128 on lo
//!            │ 198.18.31.1                │ 198.18.32.1
//!  be1 nginx proxy_protocol      be2 nginx proxy_protocol
//!      198.18.31.2:8080              198.18.32.2:8080
//! ```
//!
//! The tunnel service (`forwarding = "tunnel"`, 192.0.2.10:8000): each PoP's
//! XDP program (generic mode, on `uplink`) encapsulates the client's packets
//! to be1 or be2 (the same Maglev table in both PoPs; be2 is reached from
//! pop1 through the router and the other way round), where `anyedge node
//! attach` decapsulates and nginx (no proxy_protocol) answers the client
//! directly from 192.0.2.10 on its loopback, logging the client's own
//! address. Underlay links (router-PoP, PoP-backend) have MTU 1600.
//!
//! Everything lives under `--dir` (configs, logs, PID files); `down` ends
//! exactly the processes whose PIDs it recorded (if they are still those
//! processes), deletes the namespaces and the directory, and says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyedge_netns::Netns;
use anyhow::{bail, Context};

pub const ANYCAST_V4: &str = "192.0.2.10";
pub const ANYCAST_V6: &str = "2001:db8:a::10";

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
}

impl Lab {
    pub fn new(prefix: &str, dir: &Path) -> Lab {
        Lab {
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The namespace of `role` (not deleted when the handle is dropped).
    pub fn netns(&self, role: &str) -> Netns {
        Netns::open(&self.ns(role))
    }

    fn ip(&self, role: &str, args: &[&str]) -> anyhow::Result<()> {
        Ok(self.netns(role).ip(args)?)
    }

    fn sysctl(&self, role: &str, kv: &str) -> anyhow::Result<()> {
        Ok(self.netns(role).sysctl(kv)?)
    }

    fn link(&self, a: &str, a_if: &str, a_addrs: &[&str], b: &str, b_if: &str, b_addrs: &[&str]) -> anyhow::Result<()> {
        Ok(anyedge_netns::link(
            &self.netns(a),
            a_if,
            a_addrs,
            &self.netns(b),
            b_if,
            b_addrs,
        )?)
    }

    /// Starts `program args` inside namespace `role`, detached, output to
    /// `dir/NAME.log`, PID in `dir/NAME.pid`.
    pub fn spawn(&self, name: &str, role: &str, program: &str, args: &[String]) -> anyhow::Result<u32> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = self
            .netns(role)
            .command(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {program} in {}", self.ns(role)))?;
        let pid = child.id();
        std::fs::write(self.dir.join(format!("{name}.pid")), pid.to_string())?;
        // The lab outlives this command: the child is not waited for (it is
        // reparented when we exit) and `down` ends it by its recorded PID.
        drop(child);
        Ok(pid)
    }

    /// The PID recorded for `name` (never 0 or negative: `kill` would take
    /// those for process groups).
    pub fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|&p| p > 0)
    }

    pub fn birdc(&self, cmd: &str) -> String {
        Command::new("birdc")
            .arg("-s")
            .arg(self.dir.join("bird.ctl"))
            .args(cmd.split_whitespace())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Next hops of the anycast route at the router (one per announcing PoP).
    pub fn route_nexthops(&self) -> Vec<String> {
        let out = self
            .netns("router")
            .ip_output(&["route", "show", ANYCAST_V4])
            .unwrap_or_default();
        let mut hops: Vec<String> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    pub fn up(&self, exe: &Path) -> anyhow::Result<()> {
        for p in ["ip", "bird", "birdc", "nginx"] {
            if which(p).is_none() {
                bail!("{p} not found: apt-get install iproute2 bird2 nginx");
            }
        }
        self.claim_dir()?;
        for role in ROLES {
            // kept after `up` returns: `down` deletes them
            Netns::create(&self.ns(role))?.persist();
        }
        self.link(
            "client",
            "eth0",
            &["198.18.10.2/24", "2001:db8:10::2/64"],
            "router",
            "to-client",
            &["198.18.10.1/24", "2001:db8:10::1/64"],
        )?;
        self.link(
            "router",
            "to-pop1",
            &["198.18.1.1/30", "2001:db8:1::1/64"],
            "pop1",
            "uplink",
            &["198.18.1.2/30", "2001:db8:1::2/64"],
        )?;
        self.link(
            "router",
            "to-pop2",
            &["198.18.2.1/30", "2001:db8:2::1/64"],
            "pop2",
            "uplink",
            &["198.18.2.2/30", "2001:db8:2::2/64"],
        )?;
        self.link("pop1", "to-be", &["198.18.31.1/30"], "be1", "eth0", &["198.18.31.2/30"])?;
        self.link("pop2", "to-be", &["198.18.32.1/30"], "be2", "eth0", &["198.18.32.2/30"])?;
        self.ip("client", &["route", "add", "default", "via", "198.18.10.1"])?;
        self.ip("client", &["-6", "route", "add", "default", "via", "2001:db8:10::1"])?;
        for (pop, gw, gw6) in [
            ("pop1", "198.18.1.1", "2001:db8:1::1"),
            ("pop2", "198.18.2.1", "2001:db8:2::1"),
        ] {
            self.ip(pop, &["route", "add", "198.18.10.0/24", "via", gw])?;
            self.ip(pop, &["-6", "route", "add", "2001:db8:10::/64", "via", gw6])?;
            self.ip(pop, &["addr", "add", &format!("{ANYCAST_V4}/32"), "dev", "lo"])?;
            self.ip(pop, &["-6", "addr", "add", &format!("{ANYCAST_V6}/128"), "dev", "lo"])?;
        }
        self.sysctl("router", "net.ipv4.ip_forward=1")?;
        self.sysctl("router", "net.ipv6.conf.all.forwarding=1")?;
        self.tunnel_underlay()?;
        // ECMP by 5-tuple, so one client's connections spread over both PoPs
        self.sysctl("router", "net.ipv4.fib_multipath_hash_policy=1")?;

        // backends: nginx with proxy_protocol, single process
        for be in ["be1", "be2"] {
            let d = self.dir.join(be);
            std::fs::create_dir_all(d.join("tmp"))?;
            let conf = format!(
                r#"daemon off;
master_process off;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    # The PoP that forwarded the request: the connection to this backend
    # comes from that PoP's own address on the backend link ($remote_addr,
    # not rewritten: no real_ip). The PROXY header's destination is the
    # anycast address every PoP shares, so it cannot tell the PoPs apart;
    # anyedge's PoP TLV (0xE0) would, but nginx before 1.23.2 cannot read
    # custom TLVs.
    map $remote_addr $pop {{ 198.18.31.1 pop1; 198.18.32.1 pop2; default "unknown"; }}
    access_log {d}/access.log;
    log_format tunnel '$remote_addr:$remote_port "$request" $status';
    client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p;
    fastcgi_temp_path {d}/tmp/f; uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;
    server {{
        listen 0.0.0.0:8080 proxy_protocol;
        location / {{ return 200 "backend={be} pop=$pop client=$proxy_protocol_addr:$proxy_protocol_port anycast=$proxy_protocol_server_addr:$proxy_protocol_server_port (pop: the PoP that forwarded this, seen by the address the connection came from, $remote_addr; client and anycast: from the PROXY header)\n"; }}
    }}
    # the tunnel service: the client's own packets, decapsulated on this
    # node, no PROXY header; the reply goes straight back (DSR)
    server {{
        listen {ANYCAST_V4}:8000;
        access_log {d}/tunnel.log tunnel;
        location / {{ return 200 "backend={be} client=$remote_addr:$remote_port (tunnel: the client's own address, no PROXY header)\n"; }}
    }}
}}
"#,
                d = d.display()
            );
            std::fs::write(d.join("nginx.conf"), conf)?;
            self.start_backend(be)?;
        }

        // the tunnel nodes' decapsulation (the PoPs' tunnel sources only)
        for (node, be) in [("node1", "be1"), ("node2", "be2")] {
            self.spawn(
                node,
                be,
                &path(exe),
                &[
                    "node".into(),
                    "attach".into(),
                    "--interface".into(),
                    "eth0".into(),
                    "--vips".into(),
                    ANYCAST_V4.into(),
                    "--from".into(),
                    "198.18.41.0/24,198.18.42.0/24".into(),
                    "--mode".into(),
                    "generic".into(),
                    "--stats-file".into(),
                    path(&self.config_of(node)),
                ],
            )?;
        }

        // router: BIRD with BFD and ECMP into its kernel table
        let bird = format!(
            r#"log "{dir}/bird.log" all;
router id 198.18.10.1;
protocol device {{ }}
protocol kernel {{ merge paths on; ipv4 {{ import none; export all; }}; }}
protocol kernel {{ merge paths on; ipv6 {{ import none; export all; }}; }}
protocol bfd {{ interface "to-pop*" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}
template bgp pop {{
    local as 65000;
    hold time 9;
    connect retry time 1;
    error wait time 1, 2;
    bfd on;
}}
protocol bgp pop1 from pop {{ neighbor 198.18.1.2 as 65001; ipv4 {{ import all; export none; }}; }}
protocol bgp pop2 from pop {{ neighbor 198.18.2.2 as 65001; ipv4 {{ import all; export none; }}; }}
protocol bgp pop1v6 from pop {{ neighbor 2001:db8:1::2 as 65001; ipv6 {{ import all; export none; }}; }}
protocol bgp pop2v6 from pop {{ neighbor 2001:db8:2::2 as 65001; ipv6 {{ import all; export none; }}; }}
"#,
            dir = self.dir.display()
        );
        std::fs::write(self.dir.join("bird.conf"), bird)?;
        self.spawn(
            "bird",
            "router",
            "bird",
            &[
                "-f".into(),
                "-c".into(),
                path(&self.dir.join("bird.conf")),
                "-s".into(),
                path(&self.dir.join("bird.ctl")),
            ],
        )?;

        // the zone every PoP serves (authoritative anycast DNS)
        let zone = self.dir.join("lab.example.zone");
        std::fs::write(
            &zone,
            format!(
                "$ORIGIN lab.example.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\n\
                 ns1 A {ANYCAST_V4}\nns1 AAAA {ANYCAST_V6}\nwww A {ANYCAST_V4}\nwww AAAA {ANYCAST_V6}\n"
            ),
        )?;
        for (pop, n, be) in [("pop1", 1, "198.18.31.2"), ("pop2", 2, "198.18.32.2")] {
            let cfg = format!(
                r#"[pop]
name = "{pop}"
workers = 1
[limits]
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:9180"
token = "lab-admin-token-0123456789"
[bgp]
asn = 65001
router_id = "198.18.{n}.2"
hold_time = 9
connect_retry = "1s"
drain_timeout = "10s"
[[bgp.peer]]
name = "router"
address = "198.18.{n}.1"
asn = 65000
local_address = "198.18.{n}.2"
bfd = true
bfd_interval = "100ms"
[[bgp.peer]]
name = "router-v6"
address = "2001:db8:{n}::1"
asn = 65000
local_address = "2001:db8:{n}::2"
[[anycast]]
prefix = "{ANYCAST_V4}/32"
services = ["web"]
dns = true
[[anycast]]
prefix = "{ANYCAST_V6}/128"
services = ["web"]
dns = true
[dns]
listen = ["{ANYCAST_V4}:53", "[{ANYCAST_V6}]:53"]
[[dns.zone]]
name = "lab.example"
file = "{zone}"
[[service]]
name = "web"
listen = ["{ANYCAST_V4}:80", "[{ANYCAST_V6}]:80"]
[service.timeouts]
connect = "1s"
[service.health]
kind = "http"
path = "/"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
[[service.backend]]
name = "k8s-node"
address = "{be}:8080"
[xdp]
interfaces = ["uplink"]
mode = "generic"
tunnel_source_v4 = "198.18.4{n}.0/24"
[[service]]
name = "web-tunnel"
listen = ["{ANYCAST_V4}:8000"]
forwarding = "tunnel"
underlay_mtu = 1600
[service.health]
kind = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
[[service.backend]]
name = "node1"
address = "198.18.31.2:8080"
proxy_protocol = "none"
[[service.backend]]
name = "node2"
address = "198.18.32.2:8080"
proxy_protocol = "none"
"#,
                zone = path(&zone)
            );
            let p = self.dir.join(format!("{pop}.toml"));
            std::fs::write(&p, cfg)?;
            self.spawn(pop, pop, &path(exe), &["run".into(), "-c".into(), path(&p)])?;
        }

        // wait for both PoPs' routes (ECMP) at the router
        let t = Instant::now();
        while self.route_nexthops().len() < 2 {
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the router did not get both PoPs' routes in 30 s:\n{}",
                    self.birdc("show protocols")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Routes and MTUs of the tunnel service's underlay: each PoP reaches
    /// both nodes (the other PoP's through the router), the nodes' replies
    /// leave from the anycast address on their loopback (DSR).
    fn tunnel_underlay(&self) -> anyhow::Result<()> {
        for (ns, dev) in [
            ("router", "to-pop1"),
            ("router", "to-pop2"),
            ("pop1", "uplink"),
            ("pop2", "uplink"),
            ("pop1", "to-be"),
            ("pop2", "to-be"),
            ("be1", "eth0"),
            ("be2", "eth0"),
        ] {
            self.ip(ns, &["link", "set", dev, "mtu", "1600"])?;
        }
        self.ip("router", &["route", "add", "198.18.31.0/30", "via", "198.18.1.2"])?;
        self.ip("router", &["route", "add", "198.18.32.0/30", "via", "198.18.2.2"])?;
        // and back: the other node answers this PoP's health checks
        for net in ["198.18.32.0/30", "198.18.2.0/30"] {
            self.ip("pop1", &["route", "add", net, "via", "198.18.1.1"])?;
        }
        for net in ["198.18.31.0/30", "198.18.1.0/30"] {
            self.ip("pop2", &["route", "add", net, "via", "198.18.2.1"])?;
        }
        for (pop, be, gw) in [("pop1", "be1", "198.18.31.1"), ("pop2", "be2", "198.18.32.1")] {
            self.sysctl(pop, "net.ipv4.ip_forward=1")?;
            // the nodes' replies come from the anycast address, which is
            // local on the PoP too: forward them anyway
            for kv in [
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.to-be.rp_filter=0",
                "net.ipv4.conf.all.accept_local=1",
                "net.ipv4.conf.to-be.accept_local=1",
            ] {
                self.sysctl(pop, kv)?;
            }
            self.ip(be, &["route", "add", "default", "via", gw])?;
            self.ip(be, &["addr", "add", &format!("{ANYCAST_V4}/32"), "dev", "lo"])?;
            self.sysctl(be, "net.ipv4.conf.all.rp_filter=0")?;
            self.sysctl(be, "net.ipv4.conf.eth0.rp_filter=0")?;
        }
        // veth test bed: a partial checksum is not completed across an XDP
        // redirect (a property of veth, not of real NICs)
        if which("ethtool").is_some() {
            let ok = self
                .netns("client")
                .command("ethtool")
                .args(["-K", "eth0", "tx", "off"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!("ethtool -K eth0 tx off failed in {}", self.ns("client"));
            }
        }
        Ok(())
    }

    pub fn start_backend(&self, be: &str) -> anyhow::Result<u32> {
        let d = self.dir.join(be);
        self.spawn(
            be,
            be,
            "nginx",
            &[
                "-p".into(),
                path(&d),
                "-e".into(),
                path(&d.join("error.log")),
                "-c".into(),
                path(&d.join("nginx.conf")),
            ],
        )
    }

    /// The argument only this lab's process `name` has on its command line:
    /// its configuration file.
    fn config_of(&self, name: &str) -> PathBuf {
        match name {
            "bird" => self.dir.join("bird.conf"),
            "be1" | "be2" => self.dir.join(name).join("nginx.conf"),
            "node1" | "node2" => self.dir.join(format!("{name}.stats")),
            _ => self.dir.join(format!("{name}.toml")),
        }
    }

    /// What became of the process `name` this lab started: running only if
    /// its recorded PID is alive and is still that process (its command
    /// line names this lab's configuration file for it).
    pub fn process(&self, name: &str) -> Proc {
        match self.pid(name) {
            None => Proc::NoPidFile,
            Some(pid) => proc_state(pid, &path(&self.config_of(name))),
        }
    }

    /// Creates the run directory and marks it as the lab's (so `down` may
    /// delete it); refuses a non-empty directory that is not a lab's.
    fn claim_dir(&self) -> anyhow::Result<()> {
        if self.dir.exists() && !self.dir.join(MARKER).exists() && std::fs::read_dir(&self.dir)?.next().is_some() {
            bail!(
                "{} is not empty and was not made by `anyedge lab up`: choose another --dir (`lab down` deletes the lab's directory)",
                self.dir.display()
            );
        }
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(
            self.dir.join(MARKER),
            "made by `anyedge lab up`; `anyedge lab down` deletes this directory\n",
        )?;
        Ok(())
    }

    /// Ends the lab and says what it did, line by line: kills the processes
    /// it started (only those: a recorded PID that now belongs to another
    /// program is left alone), deletes its namespaces and its run directory.
    /// A second `down` has nothing to do and says so.
    pub fn down(&self) -> anyhow::Result<()> {
        self.teardown(&mut |line| println!("{line}"))
    }

    /// [`Lab::down`], telling `say` what it does.
    fn teardown(&self, say: &mut dyn FnMut(String)) -> anyhow::Result<()> {
        let mut did = false;
        let mut failed = Vec::new();
        let mut killed = Vec::new();
        for name in PROCS {
            match self.process(name) {
                Proc::NoPidFile => continue,
                Proc::Running(pid) | Proc::Suspended(pid) => {
                    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL) {
                        Ok(()) => {
                            say(format!("killed {name} (pid {pid})"));
                            killed.push(name);
                        }
                        Err(e) => failed.push(format!("cannot kill {name} (pid {pid}): {e}")),
                    }
                }
                dead @ Proc::Dead { .. } => say(format!("{name}: {dead}, nothing to kill")),
            }
            did = true;
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.pid")));
        }
        // SIGKILL is not synchronous: the run directory goes once they are gone
        let t = Instant::now();
        while killed
            .iter()
            .any(|n| matches!(self.process(n), Proc::Running(_) | Proc::Suspended(_)))
            && t.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        for role in ROLES {
            let ns = self.ns(role);
            if !Path::new("/run/netns").join(&ns).exists() {
                continue;
            }
            did = true;
            match self.netns(role).delete() {
                Ok(()) => say(format!("deleted namespace {ns}")),
                Err(e) => failed.push(format!("cannot delete namespace {ns}: {e}")),
            }
        }
        if self.dir.join(MARKER).exists() {
            did = true;
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => say(format!("removed run directory {}", self.dir.display())),
                Err(e) => failed.push(format!("cannot remove {}: {e}", self.dir.display())),
            }
        } else if self.dir.exists() {
            say(format!(
                "left {}: not made by `anyedge lab up` (no {MARKER} in it)",
                self.dir.display()
            ));
        }
        if !did {
            say(format!(
                "nothing to stop: no processes, namespaces ({}-*) or run directory ({}) of lab {}",
                self.prefix,
                self.dir.display(),
                self.prefix
            ));
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("; "));
        }
        Ok(())
    }

    pub fn status(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "lab {} in {}", self.prefix, self.dir.display());
        if !self.dir.exists() {
            let _ = writeln!(s, "  (no run directory: the lab is not up)");
        }
        for name in PROCS {
            let _ = writeln!(s, "  {name:5} {}", self.process(name));
        }
        let _ = writeln!(s, "router next hops for {ANYCAST_V4}: {:?}", self.route_nexthops());
        s.push_str(&self.birdc("show protocols"));
        s
    }

    /// What to try now that the lab is up, with the tools this machine has.
    pub fn howto(&self) -> String {
        let exe = std::env::current_exe().map_or_else(|_| "anyedge".to_string(), |p| path(&p));
        self.howto_with(&|p| which(p).is_some(), &exe)
    }

    /// [`Lab::howto`] with `has` telling which programs exist and `exe` the
    /// anyedge binary.
    fn howto_with(&self, has: &dyn Fn(&str) -> bool, exe: &str) -> String {
        let c = self.ns("client");
        let (p, d) = (&self.prefix, self.dir.display());
        let mut s = String::from("lab up. Try:\n");
        if has("curl") {
            let _ = writeln!(
                s,
                "  ip netns exec {c} curl -s http://{ANYCAST_V4}/   # which backend and PoP served it\n  \
                 ip netns exec {c} curl -s -g http://[{ANYCAST_V6}]/\n  \
                 ip netns exec {c} curl -s http://{ANYCAST_V4}:8000/   # tunnel: the node sees your own address"
            );
        } else {
            let _ = writeln!(
                s,
                "  (no curl here: apt-get install curl, then: ip netns exec {c} curl -s http://{ANYCAST_V4}/)"
            );
        }
        match ["dig", "kdig"].into_iter().find(|t| has(t)) {
            Some(dig) => {
                let _ = writeln!(
                    s,
                    "  ip netns exec {c} {dig} @{ANYCAST_V4} www.lab.example +nsid   # NSID: which PoP answered"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  (no dig or kdig here: apt-get install dnsutils (or knot-dnsutils for kdig), then: \
                     ip netns exec {c} dig @{ANYCAST_V4} www.lab.example +nsid   # NSID: which PoP answered)"
                );
            }
        }
        let _ = writeln!(
            s,
            "  {exe} lab status --name {p} --dir {d}\n  birdc -s {d}/bird.ctl show route all\n  \
             ip netns exec {p}-pop1 {exe} ctl status   # PoP1's admin API\n  \
             kill -STOP $(cat {d}/pop1.pid)   # a silent PoP: BFD withdraws it in ~300 ms\n  \
             {exe} lab down --name {p} --dir {d}"
        );
        s
    }
}

/// The processes the lab starts, by the name of their PID file.
const PROCS: [&str; 7] = ["bird", "pop1", "pop2", "be1", "be2", "node1", "node2"];
/// The lab's namespaces, `<prefix>-<role>`.
const ROLES: [&str; 6] = ["client", "router", "pop1", "pop2", "be1", "be2"];
/// The file that marks a run directory as made by `lab up`.
const MARKER: &str = ".anyedge-lab";

/// A process the lab started, as `/proc` shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proc {
    /// No PID file: not started, or ended by `down`.
    NoPidFile,
    Running(i32),
    /// Stopped by a signal (SIGSTOP): alive but doing nothing.
    Suspended(i32),
    /// The recorded PID exited (or is a zombie), or is another program now.
    Dead {
        pid: i32,
        why: String,
    },
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proc::NoPidFile => write!(f, "stopped"),
            Proc::Running(pid) => write!(f, "running (pid {pid})"),
            Proc::Suspended(pid) => write!(
                f,
                "suspended (pid {pid} stopped by a signal; kill -CONT {pid} resumes it)"
            ),
            Proc::Dead { pid, why } => write!(f, "dead (pid {pid} not running: {why})"),
        }
    }
}

/// The state of `pid`, which should be the process whose command line has
/// the argument `config`.
fn proc_state(pid: i32, config: &str) -> Proc {
    let dead = |why: String| Proc::Dead { pid, why };
    // An empty command line is a process between exec and its new program's
    // arguments (just started), one exiting (its memory already gone), or a
    // kernel thread: asked again for up to 100 ms, it settles.
    let t = Instant::now();
    loop {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return dead("no such process".into());
        };
        // "pid (comm) state ...": comm may hold spaces and parentheses
        let (comm, state) = match stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')) {
            Some((comm, rest)) => (comm, rest.trim_start().chars().next()),
            None => ("?", None),
        };
        if matches!(state, Some('Z' | 'X' | 'x')) {
            return dead("exited".into());
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.is_empty() {
            if t.elapsed() < Duration::from_millis(100) {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            return dead(format!("the pid is now another program's, {comm}"));
        }
        if !cmdline.split(|&b| b == 0).any(|arg| arg == config.as_bytes()) {
            return dead(format!("the pid is now another program's, {comm}"));
        }
        return match state {
            Some('T' | 't') => Proc::Suspended(pid),
            _ => Proc::Running(pid),
        };
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn which(p: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(p))
        .find(|f| f.is_file())
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use super::{proc_state, Lab, Proc, MARKER};

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "{what} within 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A child process, ended when dropped (also when a test fails).
    struct Kid(Child);

    impl Drop for Kid {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `tail -f file`: a process whose command line names `file`, as the
    /// lab's processes name their configuration file.
    fn tail(file: &std::path::Path) -> Kid {
        std::fs::write(file, "").unwrap();
        Kid(Command::new("tail").arg("-f").arg(file).spawn().unwrap())
    }

    fn sleep() -> Kid {
        Kid(Command::new("sleep").arg("30").spawn().unwrap())
    }

    #[test]
    fn a_process_is_running_only_while_alive_and_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("pop1.toml");
        let mut c = tail(&conf);
        let pid = c.0.id() as i32;
        let conf = conf.display().to_string();
        assert_eq!(proc_state(pid, &conf), Proc::Running(pid));
        // the PID alive but another program's (a reused PID) is not ours
        match proc_state(pid, "/elsewhere/pop1.toml") {
            Proc::Dead { why, .. } => assert!(why.contains("another program's, tail"), "{why}"),
            other => panic!("{other:?}"),
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        wait_for("SIGSTOP seen", || proc_state(pid, &conf) == Proc::Suspended(pid));
        c.0.kill().unwrap();
        // killed, not yet reaped: a zombie is not running
        wait_for("a zombie", || matches!(proc_state(pid, &conf), Proc::Dead { .. }));
        let st = proc_state(pid, &conf);
        assert_eq!(st.to_string(), format!("dead (pid {pid} not running: exited)"));
        c.0.wait().unwrap();
        assert!(
            matches!(proc_state(pid, &conf), Proc::Dead { .. }),
            "reaped: gone (or another program's)"
        );
    }

    #[test]
    fn status_says_stopped_dead_or_running() {
        let tmp = tempfile::tempdir().unwrap();
        let lab = Lab::new("aeu0", &tmp.path().join("lab"));
        std::fs::create_dir_all(lab.dir.join("be1")).unwrap();
        let ours = tail(&lab.dir.join("be1/nginx.conf"));
        let other = sleep();
        std::fs::write(lab.dir.join("be1.pid"), ours.0.id().to_string()).unwrap();
        std::fs::write(lab.dir.join("pop1.pid"), other.0.id().to_string()).unwrap();
        // a PID that no process has (above the kernel's pid_max)
        std::fs::write(lab.dir.join("pop2.pid"), "4194305").unwrap();
        let s = lab.status();
        assert!(s.contains(&format!("  be1   running (pid {})\n", ours.0.id())), "{s}");
        assert!(
            s.contains(&format!(
                "  pop1  dead (pid {} not running: the pid is now another program's, sleep)\n",
                other.0.id()
            )),
            "{s}"
        );
        assert!(
            s.contains("  pop2  dead (pid 4194305 not running: no such process)\n"),
            "{s}"
        );
        assert!(s.contains("  bird  stopped\n"), "{s}");
    }

    #[test]
    fn down_kills_only_its_processes_removes_its_dir_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let lab = Lab::new("aeu1", &tmp.path().join("lab"));
        lab.claim_dir().unwrap();
        let mut ours = tail(&lab.dir.join("pop1.toml"));
        let mut other = sleep();
        std::fs::write(lab.dir.join("pop1.pid"), ours.0.id().to_string()).unwrap();
        std::fs::write(lab.dir.join("bird.pid"), other.0.id().to_string()).unwrap();
        let mut said = Vec::new();
        lab.teardown(&mut |l| said.push(l)).unwrap();
        let said = said.join("\n");
        assert!(said.contains(&format!("killed pop1 (pid {})", ours.0.id())), "{said}");
        assert!(
            said.contains(&format!(
                "bird: dead (pid {} not running: the pid is now another program's, sleep), nothing to kill",
                other.0.id()
            )),
            "{said}"
        );
        assert!(
            said.contains(&format!("removed run directory {}", lab.dir.display())),
            "{said}"
        );
        assert!(!lab.dir.exists());
        assert!(ours.0.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(
            other.0.try_wait().unwrap().is_none(),
            "another program's process is left alone"
        );
        // again: nothing to do, and it says so
        let mut said = Vec::new();
        lab.teardown(&mut |l| said.push(l)).unwrap();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("nothing to stop"), "{said:?}");
    }

    #[test]
    fn up_and_down_leave_a_directory_they_did_not_make() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let lab = Lab::new("aeu2", tmp.path());
        let e = lab.claim_dir().unwrap_err().to_string();
        assert!(e.contains("not made by `anyedge lab up`"), "{e}");
        let mut said = Vec::new();
        lab.teardown(&mut |l| said.push(l)).unwrap();
        assert!(said[0].contains(&format!("no {MARKER} in it")), "{said:?}");
        assert!(tmp.path().join("notes.txt").exists());
    }

    #[test]
    fn howto_suggests_only_tools_that_exist() {
        let lab = Lab::new("ae", std::path::Path::new("/tmp/anyedge-lab"));
        let all = lab.howto_with(&|_| true, "/usr/bin/anyedge");
        assert!(
            all.contains("ip netns exec ae-client dig @192.0.2.10 www.lab.example +nsid"),
            "{all}"
        );
        assert!(
            all.contains("ip netns exec ae-client curl -s http://192.0.2.10/"),
            "{all}"
        );
        assert!(
            all.contains("ip netns exec ae-pop1 /usr/bin/anyedge ctl status"),
            "{all}"
        );
        assert!(all.contains("\n  /usr/bin/anyedge lab down --name ae"), "{all}");
        let kdig = lab.howto_with(&|p| p == "kdig", "anyedge");
        assert!(kdig.contains("ip netns exec ae-client kdig @192.0.2.10"), "{kdig}");
        assert!(
            !kdig.contains(" dig @") && !kdig.contains("\n  ip netns exec ae-client curl"),
            "{kdig}"
        );
        assert!(kdig.contains("no curl here: apt-get install curl"), "{kdig}");
        let none = lab.howto_with(&|_| false, "/x/anyedge");
        assert!(none.contains("no dig or kdig here: apt-get install dnsutils"), "{none}");
        // every suggested command starts with a program that exists (`lab
        // up` checked ip and birdc; kill is the shell's) or says what to
        // install first
        for l in none.lines().skip(1) {
            let first = l.split_whitespace().next().unwrap_or("");
            assert!(
                first.starts_with('(') || ["ip", "/x/anyedge", "birdc", "kill"].contains(&first),
                "{l}"
            );
        }
    }
}
