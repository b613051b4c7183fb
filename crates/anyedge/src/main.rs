//! `anyedge`: the anycast edge PoP daemon. See README.md and ARCHITECTURE.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

mod admin;
mod announce;
mod config;
mod ctl;
mod demo;
mod dns;
mod dnscompare;
mod fdlimit;
mod forward;
mod health;
mod lab;
mod lb;
mod logutil;
mod net;
mod notify;
mod sysctl;
mod upgrade;
mod xdp;

use config::Config;
use lb::Edge;

#[derive(Parser)]
#[command(
    name = "anyedge",
    version,
    about = "Anycast edge PoP: L4 load balancer with PROXY protocol"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the PoP daemon (without -c: the embedded default config).
    Run {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (non-zero with file:line:column: field: error).
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Run the embedded default config plus two built-in demo backends on
    /// 127.0.0.1:9001 and :9002; then try `curl http://127.0.0.1:8080/`.
    Demo,
    /// Talk to a running anyedge through its admin API.
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
        /// Admin API address.
        #[arg(long, global = true, default_value = "127.0.0.1:9180")]
        admin: String,
        /// Bearer token for state changes (or the ANYEDGE_TOKEN variable).
        #[arg(long, global = true, env = "ANYEDGE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the API's JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
    },
    /// DNS tools.
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
    /// A multi-PoP anycast lab in network namespaces (root): client, BIRD
    /// router with BFD and ECMP, two PoPs running anyedge, two nginx backends.
    Lab {
        #[command(subcommand)]
        action: LabAction,
        /// Prefix of the namespace names.
        #[arg(long, global = true, default_value = "ae")]
        name: String,
        /// Where configs, logs and PID files go.
        #[arg(long, global = true, default_value = "/tmp/anyedge-lab")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Clone)]
enum CtlAction {
    /// Prefixes, BGP peers, services, backends, guard counters.
    Status,
    /// Drain a backend (--service and --backend), one anycast prefix
    /// (--prefix), or the whole PoP (no option): drained prefixes become
    /// less preferred (GRACEFUL_SHUTDOWN, prepends), then are withdrawn.
    Drain {
        #[arg(long, requires = "backend", conflicts_with = "prefix")]
        service: Option<String>,
        #[arg(long, requires = "service")]
        backend: Option<String>,
        /// An anycast prefix, "addr/len" or just its address.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Undo a drain (same options).
    Undrain {
        #[arg(long, requires = "backend", conflicts_with = "prefix")]
        service: Option<String>,
        #[arg(long, requires = "service")]
        backend: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Reload the configuration file (like SIGHUP, but reports errors).
    Reload,
    /// Reload one DNS zone from its file (the old version keeps serving if
    /// the new one has errors, which are printed).
    ReloadZone { zone: String },
}

#[derive(Subcommand)]
enum DnsAction {
    /// Ask two name servers the same questions about a zone (every name and
    /// type, plus negative probes) and print every difference in their
    /// answers: the check before switching the registry's NS records.
    /// Exit 0: same; 1: different; 2: error.
    Compare(dnscompare::CompareArgs),
}

#[derive(Subcommand, Clone, Copy)]
enum LabAction {
    /// Build the topology and start everything; prints what to try.
    Up,
    /// Stop what `up` started (by PID) and delete the namespaces.
    Down,
    /// Processes, the router's routes and BGP sessions.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.cmd {
        Cmd::Check { config } => match load(config.as_ref()) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                if let Some(d) = &c.dns {
                    match dns::check_zones(d) {
                        Ok(records) => println!("{} zone(s), {records} record(s) from files: OK", d.zones.len()),
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                println!(
                    "{}: OK (pop {:?}, {} service(s), {} backend(s))",
                    c.source,
                    c.pop_name,
                    c.services.len(),
                    c.services.iter().map(|s| s.backends.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { config } => run(config, false),
        Cmd::Demo => run(None, true),
        Cmd::Ctl {
            action,
            admin,
            token,
            json,
        } => {
            let drain = matches!(action, CtlAction::Drain { .. });
            let action = match action {
                CtlAction::Status => ctl::Action::Status,
                CtlAction::Reload => ctl::Action::Reload,
                CtlAction::ReloadZone { zone } => ctl::Action::ReloadZone { zone },
                CtlAction::Drain {
                    service,
                    backend,
                    prefix,
                }
                | CtlAction::Undrain {
                    service,
                    backend,
                    prefix,
                } => match (service, backend, prefix) {
                    (Some(service), Some(backend), _) => ctl::Action::DrainBackend {
                        service,
                        backend,
                        drain,
                    },
                    (_, _, Some(prefix)) => ctl::Action::DrainPrefix { prefix, drain },
                    _ => ctl::Action::DrainPop { drain },
                },
            };
            match ctl::run(&admin, token.as_deref(), json, action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("anyedge ctl: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Dns {
            action: DnsAction::Compare(args),
        } => match dnscompare::run(&args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
            Err(e) => {
                eprintln!("anyedge dns compare: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Lab { action, name, dir } => {
            let lab = lab::Lab::new(&name, &dir);
            let r = match action {
                LabAction::Up => std::env::current_exe()
                    .map_err(anyhow::Error::from)
                    .and_then(|exe| lab.up(&exe))
                    .map(|()| print!("{}", lab.howto())),
                LabAction::Down => lab.down(),
                LabAction::Status => {
                    print!("{}", lab.status());
                    Ok(())
                }
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "lab {}: {e:#}",
                        match action {
                            LabAction::Up => "up",
                            LabAction::Down => "down",
                            LabAction::Status => "status",
                        }
                    );
                    if matches!(action, LabAction::Up) {
                        let _ = lab.down();
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn run(path: Option<PathBuf>, demo: bool) -> ExitCode {
    let cfg = match load(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    fdlimit::at_start(&cfg);
    for w in &cfg.warnings {
        warn!("config: {w}");
    }
    let workers = cfg
        .workers
        .map(|w| w.get() as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // Data plane: one current-thread runtime per worker thread, each owning
    // one SO_REUSEPORT socket per listen address and the connections it
    // accepts (no work stealing, no cross-thread wake-ups per connection).
    // Control plane (health checks, BGP, admin) on a small runtime of its own.
    let mut worker_rts = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("anyedge-w{i}"))
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => {
                        let _ = tx.send(Some(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        error!(error = %e, "cannot start worker runtime");
                        let _ = tx.send(None);
                    }
                },
            );
        match spawned.ok().and_then(|_| rx.recv().ok().flatten()) {
            Some(h) => worker_rts.push(h),
            None => {
                error!("cannot start worker thread {i}");
                return ExitCode::FAILURE;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("anyedge-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(daemon(cfg, path, demo, workers, worker_rts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn daemon(
    cfg: Config,
    path: Option<PathBuf>,
    demo: bool,
    workers: usize,
    worker_rts: Vec<tokio::runtime::Handle>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;

    if demo {
        demo::serve("demo-a", "127.0.0.1:9001".parse()?).await?;
        demo::serve("demo-b", "127.0.0.1:9002".parse()?).await?;
    }
    info!(pop = %cfg.pop_name, config = %cfg.source, services = cfg.services.len(), workers, "anyedge starting");
    let max_backlog = cfg.services.iter().map(|s| s.backlog).max().unwrap_or(0);
    for w in sysctl::warnings(&sysctl::Kernel::read(), max_backlog) {
        warn!("kernel setting: {w}");
    }
    let listen: Vec<String> = cfg
        .services
        .iter()
        .flat_map(|s| s.listen.iter().map(|a| a.to_string()))
        .collect();
    let admin_listen = cfg.admin.as_ref().map(|a| a.listen);
    let bgp = cfg.bgp.clone();
    let dns_cfg = cfg.dns.clone();
    let pop_name = cfg.pop_name.clone();
    let dns_rts = worker_rts.clone();
    // Started by an upgrading process? Then take over its listening sockets.
    let inherit = tokio::task::spawn_blocking(upgrade::inherit).await??;
    let (mut inherit, inherited) = match inherit {
        Some((i, l)) => {
            info!(
                lb_addresses = l.lb.len(),
                dns_addresses = l.dns.udp.len().max(l.dns.tcp.len()),
                sockets = l.count(),
                "upgrade: listening sockets received"
            );
            (Some(i), l)
        }
        None => (None, upgrade::Inherited::default()),
    };
    let upgrade::Inherited {
        lb: inherited,
        dns: dns_inherited,
    } = inherited;
    let max_wait = cfg
        .services
        .iter()
        .map(|s| {
            s.health
                .interval
                .saturating_mul(s.health.rise)
                .saturating_add(s.health.timeout)
        })
        .max()
        .unwrap_or_default()
        + std::time::Duration::from_secs(2);
    let upgrading = inherit.is_some();
    if let (Some(listen), false) = (admin_listen, upgrading) {
        // (an upgrade binds next to the old process's admin socket)
        net::refuse_taken(listen, false).map_err(|e| anyhow::anyhow!("admin API: cannot listen on {listen}: {e}"))?;
    }
    let edge: Arc<Edge> = Edge::start(cfg, workers, inherited, worker_rts, upgrading)?;
    // DNS binds (or takes over) its sockets once the file zones are loaded;
    // during an upgrade it reads them only once every zone is there (the
    // old process answers meanwhile), then both read them until READY.
    let dns = match &dns_cfg {
        Some(d) => {
            // Loading big zones takes a while: stay stoppable meanwhile
            // (nothing is announced yet, so stopping is just exiting; in an
            // upgrade the old process keeps serving).
            let (d, pop, rts) = (d.clone(), pop_name.clone(), dns_rts.clone());
            let load = tokio::task::spawn_blocking(move || {
                dns::Dns::start_with(&d, &pop, workers, &rts, dns_inherited, upgrading)
            });
            tokio::select! {
                r = load => Some(r??),
                // exit at once: the runtime would otherwise wait for the load
                _ = term.recv() => { info!("SIGTERM while loading zones: exiting"); std::process::exit(0) }
                _ = int.recv() => { info!("SIGINT while loading zones: exiting"); std::process::exit(0) }
            }
        }
        None => {
            let n = dns_inherited.count();
            if n > 0 {
                warn!(
                    sockets = n,
                    "upgrade: no [dns] section any more: closing the inherited dns sockets"
                );
            }
            None
        }
    };
    if upgrading {
        // Accept only once the backends have passed their checks (or the
        // checks had their chance): the old process serves meanwhile.
        let deadline = forward::deadline(tokio::time::Instant::now(), max_wait);
        while !edge.backends_settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        edge.open_gate();
        // Secondary zones without a saved copy need their first transfer
        // before this process answers for them (REFUSED otherwise): the old
        // process, which has them, keeps answering alone until then.
        if let Some(d) = &dns {
            let deadline = tokio::time::Instant::now() + DNS_UPGRADE_WAIT;
            while let Err(why) = d.serving_all() {
                if tokio::time::Instant::now() >= deadline {
                    warn!(reason = %why, "upgrade: serving DNS although not every zone is loaded yet");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            d.open()?;
        }
    }
    if let Some(mut i) = inherit.take() {
        // Serving now; the old process stops accepting, makes us systemd's
        // main process (MAINPID=), and hands over BGP. Our READY=1 below is
        // only accepted by systemd (NotifyAccess=main) after that.
        i.say("READY")?;
        match tokio::task::spawn_blocking(move || i.expect("BGP_RELEASED")).await {
            Ok(Ok(())) => info!("upgrade: took over from the previous process"),
            Ok(Err(e)) => warn!("upgrade: the previous process did not finish the hand-over ({e:#}); serving anyway"),
            Err(e) => warn!("upgrade: hand-over task failed ({e}); serving anyway"),
        }
    }
    if let Some(fp) = xdp::FastPath::start(&edge.config()) {
        let _ = edge.fast_path.set(fp);
    }
    let announcer = bgp
        .as_ref()
        .map(|b| announce::Announcer::start(edge.clone(), b, dns.clone()));
    let ctl = Arc::new(admin::Control {
        edge: edge.clone(),
        config_path: path.clone(),
        announcer: announcer.clone(),
        dns: dns.clone(),
    });
    if let Some(listen) = admin_listen {
        admin::serve(listen, ctl.clone()).await?;
    }
    if demo {
        info!("demo ready: try `curl http://127.0.0.1:8080/` (backends turn healthy after 2 checks, ~1s)");
    }
    info!(listen = ?listen, "ready");
    notify::notify(&format!("READY=1\nSTATUS=serving {} listener(s)", listen.len()));

    let mut handover: Option<upgrade::Handover> = None;
    loop {
        tokio::select! {
            _ = usr2.recv() => {
                if demo {
                    warn!("SIGUSR2: upgrade is not supported in demo mode");
                    continue;
                }
                info!("SIGUSR2: starting the new binary and handing over the listening sockets");
                let mut fds: Vec<_> = edge.listener_fds().into_iter().map(|(a, f)| (upgrade::Kind::Lb, a, f)).collect();
                if let Some(d) = &dns {
                    let (udp, tcp) = d.socket_fds();
                    fds.extend(udp.into_iter().map(|(a, f)| (upgrade::Kind::DnsUdp, a, f)));
                    fds.extend(tcp.into_iter().map(|(a, f)| (upgrade::Kind::DnsTcp, a, f)));
                }
                let r = tokio::task::spawn_blocking(move || -> anyhow::Result<upgrade::Handover> {
                    let mut h = upgrade::Handover::start()?;
                    upgrade::send_listeners(&h.chan.stream, &fds)?;
                    h.chan.expect("READY")?;
                    Ok(h)
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
                match r {
                    Ok(h) => {
                        info!(new_pid = h.child_pid, "upgrade: new process ready; handing over");
                        handover = Some(h);
                        break;
                    }
                    Err(e) => error!("upgrade failed, this process keeps serving: {e:#}"),
                }
            }
            _ = term.recv() => { info!("SIGTERM received"); break; }
            _ = int.recv() => { info!("SIGINT received"); break; }
            _ = hup.recv() => {
                notify::reloading();
                reload(&ctl);
                notify::notify("READY=1");
            }
            _ = usr1.recv() => info!("status\n{}", edge.status_report()),
        }
    }

    match &handover {
        // systemd follows the new process from here on: without this it
        // would see its main process exit and stop the service, killing the
        // new process with it.
        Some(h) => notify::notify(&format!(
            "MAINPID={}\nSTATUS=upgraded: PID {} serves, PID {} drains",
            h.child_pid,
            h.child_pid,
            std::process::id()
        )),
        None => notify::notify("STOPPING=1\nSTATUS=draining"),
    }
    let grace = edge.config().shutdown_grace;
    if let Some(mut h) = handover {
        // Upgrade: the new process accepts from the same sockets already;
        // stop our accept loops (closing only our copies), give BGP to the
        // new process, then finish our own connections.
        edge.stop_accepting();
        stop_dns(&dns).await;
        if let Some(a) = &announcer {
            a.shutdown_with(std::time::Duration::from_secs(2), false).await;
        }
        if let Err(e) = tokio::task::spawn_blocking(move || h.chan.say("BGP_RELEASED")).await {
            warn!(error = %e, "upgrade: could not tell the new process");
        }
        info!("upgrade: listeners handed over; draining this process's connections");
    } else {
        // Shutdown invariant: withdraw routes (and close BGP sessions with
        // Cease) -> stop accepting -> drain open connections up to the grace
        // period -> exit.
        if let Some(a) = &announcer {
            a.shutdown(std::time::Duration::from_secs(2)).await;
        }
        edge.stop_accepting();
        stop_dns(&dns).await;
    }
    let open_now =
        || edge.active.load(std::sync::atomic::Ordering::Relaxed) + dns.as_ref().map_or(0, |d| d.tcp_connections());
    info!(open_connections = open_now(), grace = ?grace, "listeners closed; draining");
    // LB connections and DNS TCP connections, up to the same grace period
    let deadline = forward::deadline(tokio::time::Instant::now(), grace);
    let drain_all = async {
        let dns_drain = async {
            match &dns {
                Some(d) => d.drain(deadline).await,
                None => 0,
            }
        };
        let (lb, dns) = tokio::join!(edge.drain(grace), dns_drain);
        lb + dns
    };
    let left = tokio::select! {
        n = drain_all => n,
        _ = int.recv() => { warn!("second SIGINT: not waiting for connections"); open_now() }
        _ = term.recv() => { warn!("second SIGTERM: not waiting for connections"); open_now() }
    };
    if left > 0 {
        warn!(closed = left, "grace period over; closing remaining connections");
    } else {
        info!("all connections drained");
    }
    info!("anyedge stopped");
    Ok(())
}

/// How long an upgrading process waits for its secondary DNS zones (first
/// transfer) before it says READY anyway.
const DNS_UPGRADE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Stops the DNS listeners (after the routes are withdrawn, or once the new
/// process is READY): UDP threads answer what they have read, then stop
/// reading; open TCP connections are drained with the LB's.
async fn stop_dns(dns: &Option<Arc<dns::Dns>>) {
    if let Some(d) = dns.clone() {
        let _ = tokio::task::spawn_blocking(move || d.stop()).await;
    }
}

/// Reload: parse the whole file first; only a valid config is applied, and
/// applying is all-or-nothing (listeners are bound before anything changes).
fn reload(ctl: &admin::Control) {
    info!(config = %config::source_name(ctl.config_path.as_ref()), "SIGHUP: reloading configuration");
    match ctl.reload() {
        Ok(()) => info!("reload applied"),
        Err(e) => error!(error = %e, "reload rejected; keeping the running configuration"),
    }
}
