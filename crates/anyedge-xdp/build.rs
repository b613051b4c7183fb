//! Compiles `bpf/guard.bpf.c` (with `bpf/tunnel.h`) and `bpf/decap.bpf.c`
//! with clang into `$OUT_DIR/guard.bpf.o` and `$OUT_DIR/decap.bpf.o`, which
//! `src/lib.rs` and `src/decap.rs` embed.
//!
//! Without clang (or when the program does not compile, e.g. the libbpf-dev
//! headers are missing) the build does not fail: it sets the cfg
//! `anyedge_xdp_unavailable` and the reason in `ANYEDGE_XDP_UNAVAILABLE`, so
//! the crate builds and the loader reports the reason at run time (the daemon
//! then stays on the userspace guard). `ANYEDGE_XDP_REQUIRE=1` turns that
//! fallback into a build error (for release and CI builds).
//!
//! Environment: `CLANG` (default `clang`), `ANYEDGE_XDP_CFLAGS` (extra
//! flags, whitespace separated), `ANYEDGE_XDP_REQUIRE`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: [(&str, &str); 2] = [("bpf/guard.bpf.c", "guard.bpf.o"), ("bpf/decap.bpf.c", "decap.bpf.o")];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(anyedge_xdp_unavailable)");
    for (source, _) in SOURCES {
        println!("cargo::rerun-if-changed={source}");
    }
    println!("cargo::rerun-if-changed=bpf/tunnel.h");
    for var in ["CLANG", "ANYEDGE_XDP_CFLAGS", "ANYEDGE_XDP_REQUIRE"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if let Err(reason) = SOURCES.iter().try_for_each(|&(source, object)| build(source, object)) {
        if env::var_os("ANYEDGE_XDP_REQUIRE").is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("{reason}");
            std::process::exit(1);
        }
        println!("cargo::warning=anyedge-xdp: {reason}");
        println!("cargo::rustc-cfg=anyedge_xdp_unavailable");
        println!("cargo::rustc-env=ANYEDGE_XDP_UNAVAILABLE={reason}");
    }
}

fn build(source_rel: &str, object: &str) -> Result<(), String> {
    let out_dir = env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?;
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR not set")?;
    let source = PathBuf::from(manifest_dir).join(source_rel);
    let out = PathBuf::from(out_dir).join(object);
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    let version = Command::new(&clang).arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        return Err("built without clang: XDP unavailable".to_string());
    }

    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    let mut cmd = Command::new(&clang);
    cmd.args([
        "-O2",
        "-g",
        "-target",
        target,
        "-mcpu=v2",
        "-Wall",
        "-Wno-unused-function",
    ]);
    // <linux/types.h> needs <asm/types.h>, which Debian keeps under the
    // multiarch directory that clang does not search for the bpf target.
    if let Some(dir) = multiarch_include(&clang) {
        cmd.arg("-I").arg(dir);
    }
    if let Ok(extra) = env::var("ANYEDGE_XDP_CFLAGS") {
        cmd.args(extra.split_whitespace());
    }
    cmd.arg("-c").arg(&source).arg("-o").arg(&out);
    let result = cmd
        .output()
        .map_err(|e| format!("running {clang}: {e}: XDP unavailable"))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        // Show the whole compiler output in the build log; the runtime
        // reason gets the first error line (env values are one line).
        for line in stderr.lines() {
            println!("cargo::warning={line}");
        }
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("no diagnostics")
            .trim()
            .to_string();
        return Err(format!(
            "{source_rel} did not compile with {clang} (is libbpf-dev installed?): {first}: XDP unavailable"
        ));
    }
    Ok(())
}

/// `/usr/include/<multiarch>` if it has `asm/types.h`.
fn multiarch_include(clang: &str) -> Option<PathBuf> {
    let from_clang = Command::new(clang)
        .arg("-print-multiarch")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty());
    let from_target = env::var("CARGO_CFG_TARGET_ARCH")
        .ok()
        .map(|arch| format!("{arch}-linux-gnu"));
    [from_clang, from_target]
        .into_iter()
        .flatten()
        .map(|m| Path::new("/usr/include").join(m))
        .find(|dir| dir.join("asm/types.h").is_file())
}
