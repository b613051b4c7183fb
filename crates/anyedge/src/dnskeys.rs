//! `anyedge dns keygen` and `anyedge dns ds`: the DNSSEC key files an
//! operator makes once and copies to every PoP, and the DS record to give
//! the parent's registry. File format: see `anyedge_dns::sign`.

use std::path::{Path, PathBuf};

use anyedge_dns::sign::{self, Algorithm, SigningKey};
use anyhow::{bail, Context};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (algorithm 13): the most deployed.
    Ecdsap256,
    /// Ed25519 (algorithm 15): smaller signatures.
    Ed25519,
}

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The zone the key is for, e.g. example.com.
    #[arg(long)]
    pub zone: String,
    /// The signing algorithm.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::Ecdsap256)]
    pub algorithm: KeyAlgorithm,
    /// A key-signing key (flags 257: signs the DNSKEY set; its DS goes to
    /// the parent). Without --ksk or --csk: a zone-signing key (flags 256).
    #[arg(long, conflicts_with = "csk")]
    pub ksk: bool,
    /// A combined signing key (flags 257, signs everything when the zone
    /// has no separate zone-signing key).
    #[arg(long)]
    pub csk: bool,
    /// Directory for K<zone>+<alg>+<tag>.key and .private (the private
    /// file is written mode 0600).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct DsArgs {
    /// The zone, e.g. example.com.
    pub zone: String,
    /// Configuration file: the DS of every KSK/CSK of the zone's
    /// `dnssec.keys`.
    #[arg(short, long, value_name = "FILE", required_unless_present = "key")]
    pub config: Option<PathBuf>,
    /// Key files instead of a configuration (a .key file or its stem).
    #[arg(long, value_name = "FILE")]
    pub key: Vec<PathBuf>,
}

fn absolute(zone: &str) -> anyhow::Result<String> {
    crate::config::canonical_name(zone).with_context(|| format!("{zone:?} is not a domain name"))
}

/// Writes a new key pair; returns the file stem written.
pub fn keygen(a: &KeygenArgs) -> anyhow::Result<PathBuf> {
    let zone = absolute(&a.zone)?;
    let alg = match a.algorithm {
        KeyAlgorithm::Ecdsap256 => Algorithm::EcdsaP256Sha256,
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
    };
    let (key, private) = SigningKey::generate(alg, a.ksk || a.csk)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let stem = a.out.join(key.file_stem(&zone));
    let kp = PathBuf::from(format!("{}.key", stem.display()));
    let pp = PathBuf::from(format!("{}.private", stem.display()));
    if kp.exists() || pp.exists() {
        bail!("{} exists; not overwritten", kp.display());
    }
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pp)
            .with_context(|| format!("{}", pp.display()))?;
        f.write_all(sign::private_file_text(alg, &private).as_bytes())?;
    }
    std::fs::write(&kp, key.key_file_text(&zone)).with_context(|| format!("{}", kp.display()))?;
    Ok(stem)
}

/// DS lines (presentation) of the zone's SEP keys.
pub fn ds(a: &DsArgs) -> anyhow::Result<Vec<String>> {
    let zone = absolute(&a.zone)?;
    let stems: Vec<PathBuf> = if !a.key.is_empty() {
        a.key.clone()
    } else {
        let path = a.config.as_ref().context("--config or --key")?;
        let cfg = crate::config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let dns = cfg.dns.as_ref().context("the configuration has no [dns] section")?;
        let z = dns
            .zones
            .iter()
            .find(|z| z.name == zone)
            .with_context(|| format!("no zone {zone} in {}", path.display()))?;
        z.dnssec
            .as_ref()
            .with_context(|| format!("zone {zone} has no dnssec section"))?
            .keys
            .clone()
    };
    let owner = crate::dns::domain_wire(&zone);
    let mut out = Vec::new();
    for s in stems {
        let t = s.to_string_lossy();
        let t = t
            .strip_suffix(".key")
            .or_else(|| t.strip_suffix(".private"))
            .unwrap_or(&t);
        let kp = Path::new(&format!("{t}.key")).to_path_buf();
        let text = std::fs::read_to_string(&kp).with_context(|| format!("{}", kp.display()))?;
        let (flags, alg, public) = sign::parse_key_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", kp.display()))?;
        if flags & 1 == 0 {
            continue;
        }
        let mut rd = flags.to_be_bytes().to_vec();
        rd.extend([3, alg]);
        rd.extend(public);
        out.push(sign::ds_presentation(&zone, &owner, &rd));
    }
    if out.is_empty() {
        bail!("no key-signing (flags 257) key for {zone}");
    }
    Ok(out)
}
