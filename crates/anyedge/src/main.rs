//! `anyedge`: the anycast edge PoP daemon. See README.md and ARCHITECTURE.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use anyedge::config::{self, Config};
use anyedge::pop::{self, Pop};
use anyedge::{admin, ctl, demo, dns, dnscompare, dnskeys, fdlimit, lab, notify, status, sysctl, upgrade};

#[derive(Parser)]
#[command(
    name = "anyedge",
    version,
    about = "Anycast edge PoP: L4 load balancer with PROXY protocol"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--log-format`, on the subcommands that log (`run`, `demo`).
#[derive(clap::Args, Clone, Copy)]
struct LogArgs {
    /// Log lines (to stderr) as text for people or as JSON objects, one a
    /// line, for machines; RUST_LOG sets the level (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// `anyedge run --help`: what each signal does.
const SIGNALS: &str = "\
Signals:
  SIGHUP           reload the configuration: parsed and checked completely,
                   then applied all or nothing (a bad file is logged and the
                   running configuration kept); open connections are kept
  SIGTERM, SIGINT  graceful stop: drain and withdraw the anycast prefixes,
                   BGP Cease, close the listeners, drain open connections up
                   to limits.shutdown_grace, exit (a second one: exit without
                   waiting for connections)
  SIGUSR1          log a status report (prefixes, peers, services, backends,
                   counters)
  SIGUSR2          binary upgrade: start the binary now installed at this
                   path and hand it the listening sockets (LB and DNS); this
                   process then drains and exits";

#[derive(Subcommand)]
enum Cmd {
    /// Run the PoP daemon (without -c: the embedded default config).
    #[command(after_help = SIGNALS)]
    Run {
        /// The configuration file, e.g. /etc/anyedge/anyedge.toml (default:
        /// the embedded default config). Re-read on SIGHUP.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Validate a config file and exit (non-zero with file:line:column: field: error).
    Check {
        /// The configuration file to check (default: the embedded default
        /// config); zone files it names are loaded too.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the embedded default config plus two built-in demo backends on
    /// 127.0.0.1:9001 and :9002; then try `curl http://127.0.0.1:8080/`.
    Demo {
        #[command(flatten)]
        log: LogArgs,
    },
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
    /// The backend node's end of tunnel forwarding (forwarding = "tunnel").
    Node {
        #[command(subcommand)]
        action: NodeAction,
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
enum BackendAction {
    /// Add a backend: it gets traffic once it passes `rise` checks.
    Add {
        /// The service to add it to.
        #[arg(long)]
        service: String,
        /// The backend's IP:PORT.
        #[arg(long)]
        address: String,
        /// Its name (default: the address, as discovered backends).
        #[arg(long)]
        name: Option<String>,
        /// Its weight (default 1).
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a backend of any origin: no new connections, open ones
    /// finish (or the service's drain_timeout), then it is gone.
    Remove {
        /// The service of the backend.
        #[arg(long)]
        service: String,
        /// The backend's name.
        #[arg(long)]
        backend: String,
    },
    /// Set a backend's weight (0: no new connections).
    Weight {
        /// The service of the backend.
        #[arg(long)]
        service: String,
        /// The backend's name.
        #[arg(long)]
        backend: String,
        /// The new weight, 0-10000.
        #[arg(long)]
        weight: u32,
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
        /// The service of the backend to drain (with --backend).
        #[arg(long, requires = "backend", conflicts_with = "prefix")]
        service: Option<String>,
        /// The backend to drain (with --service): no new connections, open
        /// ones finish.
        #[arg(long, requires = "service")]
        backend: Option<String>,
        /// An anycast prefix, "addr/len" or just its address.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Undo a drain: a backend (--service and --backend), one anycast
    /// prefix (--prefix), or the whole PoP (no option).
    Undrain {
        /// The service of the backend to undrain (with --backend).
        #[arg(long, requires = "backend", conflicts_with = "prefix")]
        service: Option<String>,
        /// The backend to undrain (with --service).
        #[arg(long, requires = "service")]
        backend: Option<String>,
        /// An anycast prefix to announce normally again, "addr/len" or just
        /// its address.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Add, remove or reweight a backend at run time (kept in
    /// pop.state_dir across reloads and restarts).
    Backend {
        #[command(subcommand)]
        action: BackendAction,
    },
    /// Reload the configuration file (like SIGHUP, but reports errors).
    Reload,
    /// Reload one DNS zone from its file (the old version keeps serving if
    /// the new one has errors, which are printed).
    ReloadZone {
        /// The zone's name, e.g. example.com.
        zone: String,
    },
}

#[derive(Subcommand)]
enum DnsAction {
    /// Ask two name servers the same questions about a zone (every name and
    /// type, plus negative probes) and print every difference in their
    /// answers: the check before switching the registry's NS records.
    /// Exit 0: same; 1: different; 2: error.
    Compare(dnscompare::CompareArgs),
    /// Generate a DNSSEC signing key pair (K<zone>+<alg>+<tag>.key and
    /// .private) for a zone's `dnssec.keys`; copy both files to every PoP.
    /// Prints the file stem.
    Keygen(dnskeys::KeygenArgs),
    /// Print the DS record (SHA-256) of a zone's key-signing keys, to give
    /// the parent zone's registry.
    Ds(dnskeys::DsArgs),
}

#[derive(Subcommand)]
enum NodeAction {
    /// Attach the decapsulation program (XDP, no kernel modules) to the
    /// interface the PoPs' encapsulated packets arrive on; stays in the
    /// foreground until SIGTERM/SIGINT.
    Attach(anyedge::node::AttachArgs),
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
    // only `run` and `demo` log; the other commands print
    init_logging(match &cli.cmd {
        Cmd::Run { log, .. } | Cmd::Demo { log } => log.log_format,
        _ => LogFormat::Text,
    });
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
        Cmd::Run { config, .. } => run(config, false),
        Cmd::Demo { .. } => run(None, true),
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
                CtlAction::Backend { action } => match action {
                    BackendAction::Add {
                        service,
                        address,
                        name,
                        weight,
                    } => ctl::Action::BackendAdd {
                        service,
                        address,
                        name,
                        weight,
                    },
                    BackendAction::Remove { service, backend } => ctl::Action::BackendRemove { service, backend },
                    BackendAction::Weight {
                        service,
                        backend,
                        weight,
                    } => ctl::Action::BackendWeight {
                        service,
                        backend,
                        weight,
                    },
                },
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
        Cmd::Node {
            action: NodeAction::Attach(a),
        } => match anyedge::node::attach(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("node attach: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Dns {
            action: DnsAction::Keygen(args),
        } => match dnskeys::keygen(&args) {
            Ok(stem) => {
                println!("{}", stem.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("anyedge dns keygen: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Dns {
            action: DnsAction::Ds(args),
        } => match dnskeys::ds(&args) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("anyedge dns ds: {e:#}");
                ExitCode::FAILURE
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
    let workers = cfg
        .workers
        .map(|w| w.get() as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // Data plane: one current-thread runtime per worker thread (see
    // `pop::spawn_workers`). Control plane (health checks, BGP, admin) on a
    // small runtime of its own.
    let worker_rts = match pop::spawn_workers(workers) {
        Ok(r) => r,
        Err(e) => {
            error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
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
    match rt.block_on(daemon(cfg, path, demo, worker_rts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon's life: start the PoP (taking over from an upgrading
/// predecessor if there is one), announce, serve until a signal, then shut
/// down or hand over. The order of each step lives in [`pop::Pop`].
async fn daemon(
    cfg: Config,
    path: Option<PathBuf>,
    demo: bool,
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
    info!(pop = %cfg.pop_name, config = %cfg.source, services = cfg.services.len(), workers = worker_rts.len(), "anyedge starting");
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
    // Started by an upgrading process? Then take over its listening sockets.
    let (mut inherit, inherited) = match tokio::task::spawn_blocking(upgrade::inherit).await?? {
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
    let upgrading = inherit.is_some();
    let start = Pop::start(
        cfg,
        pop::StartOptions {
            config_path: path,
            worker_rts,
            inherited,
            upgrading,
        },
    );
    // Loading big zones takes a while: stay stoppable meanwhile (nothing
    // is announced yet, so stopping is just exiting; in an upgrade the old
    // process keeps serving). Exit at once: the runtime would otherwise
    // wait for the load.
    let pop = tokio::select! {
        p = start => p?,
        _ = term.recv() => { info!("SIGTERM while starting (loading zones): exiting"); std::process::exit(0) }
        _ = int.recv() => { info!("SIGINT while starting (loading zones): exiting"); std::process::exit(0) }
    };
    if upgrading {
        pop.take_over().await?;
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
    pop.announce();
    if let Some(listen) = admin_listen {
        admin::serve(listen, pop.clone()).await?;
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
                let fds = pop.listener_fds();
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
                // (logrotate: a new file, whether or not the reload succeeds)
                pop.edge.reopen_access_log();
                reload(&pop);
                notify::notify("READY=1");
            }
            _ = usr1.recv() => info!("status\n{}", status::Status::read(&pop).report()),
        }
    }

    match handover {
        Some(mut h) => {
            // systemd follows the new process from here on: without this it
            // would see its main process exit and stop the service, killing
            // the new process with it.
            notify::notify(&format!(
                "MAINPID={}\nSTATUS=upgraded: PID {} serves, PID {} drains",
                h.child_pid,
                h.child_pid,
                std::process::id()
            ));
            pop.hand_over().await;
            if let Err(e) = tokio::task::spawn_blocking(move || h.chan.say("BGP_RELEASED")).await {
                warn!(error = %e, "upgrade: could not tell the new process");
            }
            info!("upgrade: listeners handed over; draining this process's connections");
        }
        None => {
            notify::notify("STOPPING=1\nSTATUS=draining");
            pop.shutdown().await;
        }
    }
    let left = tokio::select! {
        n = pop.drain() => n,
        _ = int.recv() => { warn!("second SIGINT: not waiting for connections"); pop.open_connections() }
        _ = term.recv() => { warn!("second SIGTERM: not waiting for connections"); pop.open_connections() }
    };
    if left > 0 {
        warn!(closed = left, "grace period over; closing remaining connections");
    } else {
        info!("all connections drained");
    }
    info!("anyedge stopped");
    Ok(())
}

/// Reload: parse the whole file first; only a valid config is applied, and
/// applying is all-or-nothing (listeners are bound before anything changes).
fn reload(pop: &Pop) {
    info!(config = %config::source_name(pop.config_path()), "SIGHUP: reloading configuration");
    match pop.reload() {
        Ok(()) => info!("reload applied"),
        Err(e) => error!(error = %e, "reload rejected; keeping the running configuration"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand and every option (at every level) says what it is
    /// for in `--help`.
    #[test]
    fn every_subcommand_and_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
                // the values of an option that takes one (flags: true/false)
                let values = if a.get_action().takes_values() {
                    a.get_possible_values()
                } else {
                    Vec::new()
                };
                for v in values {
                    if v.get_help().is_none() && !a.is_hide_possible_values_set() {
                        missing.push(format!("{path} {id}={}", v.get_name()));
                    }
                }
            }
            for sc in cmd.get_subcommands() {
                let p = format!("{path} {}", sc.get_name());
                if sc.get_name() != "help" && sc.get_about().is_none() && sc.get_long_about().is_none() {
                    missing.push(p.clone());
                }
                walk(sc, &p, missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "anyedge", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
