//! `anyedge node attach`: the backend node's end of tunnel forwarding. It
//! loads the decapsulation program (`anyedge_xdp::decap`), attaches it to
//! the node's receiving interface, and stays in the foreground until
//! SIGTERM/SIGINT (then detaches), printing the counters every 10 s when
//! they changed. The VIPs must sit on the node's loopback and its services
//! listen on them; replies leave directly (DSR).

use std::net::IpAddr;

/// What `anyedge node attach` was asked.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// The interface the encapsulated packets arrive on.
    #[arg(long, value_name = "IFNAME")]
    pub interface: String,
    /// The VIPs this node serves (comma separated or repeated).
    #[arg(long, value_name = "ADDRESS", value_delimiter = ',', required = true)]
    pub vips: Vec<IpAddr>,
    /// The PoPs' outer source prefixes (their `[xdp] tunnel_source_v4`/`_v6`);
    /// encapsulated packets from anywhere else are dropped and counted.
    #[arg(long, value_name = "PREFIX", value_delimiter = ',', required = true)]
    pub from: Vec<String>,
    /// Accept GUE on this UDP port too (the services' `gue_port`).
    #[arg(long, value_name = "PORT")]
    pub gue_port: Option<u16>,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, default_value = "auto")]
    pub mode: String,
    /// Also write the counters to this file (one `verdict=packets ...`
    /// line, replaced every second), e.g. for a node exporter's textfile.
    #[arg(long, value_name = "FILE")]
    pub stats_file: Option<std::path::PathBuf>,
}

#[cfg(feature = "xdp")]
pub fn attach(a: &AttachArgs) -> anyhow::Result<()> {
    use std::time::Duration;

    use anyedge_xdp::decap::Decap;
    use anyedge_xdp::{Mode, Prefix};
    use anyhow::Context as _;

    let mode = match a.mode.as_str() {
        "auto" => Mode::Auto,
        "native" => Mode::Native,
        "generic" => Mode::Generic,
        m => anyhow::bail!("--mode {m:?}: auto, native or generic"),
    };
    let from: Vec<Prefix> = a
        .from
        .iter()
        .map(|s| s.parse::<Prefix>().map_err(|e| anyhow::anyhow!("--from {s:?}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let mut d = Decap::load().context("loading the decapsulation program")?;
    d.set_from(&from)?;
    d.set_vips(&a.vips)?;
    d.set_gue_port(a.gue_port)?;
    d.attach_to(&a.interface, mode)?;
    println!(
        "decapsulating on {} ({mode}) for {:?} from {:?}{}; Ctrl-C or SIGTERM detaches",
        a.interface,
        a.vips,
        a.from,
        a.gue_port.map_or(String::new(), |p| format!(", GUE on UDP {p}"))
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let every = if a.stats_file.is_some() { 1 } else { 10 };
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        let mut last = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    if let Ok(c) = d.counters() {
                        let line: Vec<String> = c.iter().map(|(v, n)| format!("{}={n}", v.as_str())).collect();
                        if let Some(f) = &a.stats_file {
                            if let Err(e) = std::fs::write(f, format!("{}\n", line.join(" "))) {
                                eprintln!("writing {}: {e}", f.display());
                            }
                        }
                        if c != last {
                            println!("{}", line.join(" "));
                            last = c;
                        }
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    d.detach()?;
    println!("detached from {}", a.interface);
    Ok(())
}

#[cfg(not(feature = "xdp"))]
pub fn attach(_a: &AttachArgs) -> anyhow::Result<()> {
    anyhow::bail!("this binary was built without the `xdp` feature")
}
