//! The status page in headless Chromium: `.ci/status_page.js` (Debian's
//! chromium driven by playwright-core, which `.ci/run` installs in
//! `.ci/browser`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the page script with `node` (a command for `node`, maybe inside a
/// namespace): `.ci/status_page.js URL SHOT TOKEN ACTION`, with `env`;
/// fails the test with the script's output if it fails.
pub fn status_page(mut node: Command, url: &str, shot: &Path, token: &str, action: &str, env: &[(&str, &str)]) {
    let modules = root().join(".ci/browser/node_modules");
    assert!(
        modules.join("playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "needs Debian's chromium and playwright-core in .ci/browser (.ci/run installs both)"
    );
    node.arg(root().join(".ci/status_page.js"))
        .arg(url)
        .arg(shot)
        .arg(token)
        .arg(action)
        .env("NODE_PATH", &modules);
    for (k, v) in env {
        node.env(k, v);
    }
    let out = node.output().expect("run node");
    assert!(
        out.status.success(),
        "browser ({action}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
