//! The CLI as an operator uses it: `demo`, `check`, `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn demo_shows_client_address_handed_over_by_proxy_v2() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .arg("demo")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let lb: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    wait_port(lb, Duration::from_secs(10));
    let read_log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let start = std::time::Instant::now();
    while read_log().matches("backend up").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (port, body) = get(lb).unwrap();
    // IPv6 listener, IPv6 client address in the PROXY v2 header
    let v6 = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("[::1]:8080").unwrap();
        let p6 = s.local_addr().unwrap().port();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        (p6, r)
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        body.contains(&format!("client address (from PROXY header): 127.0.0.1:{port}")),
        "{body}"
    );
    assert!(body.contains("PoP: demo-pop"), "{body}");
    assert!(
        v6.1.contains(&format!("client address (from PROXY header): [::1]:{}", v6.0)),
        "{}",
        v6.1
    );
    assert!(body.contains("unique id: demo-pop-"), "{body}");
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/anyedge.toml");

/// `anyedge ARGS...`: (success, stdout, stderr).
fn anyedge(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_packaged_config_and_names_line_and_field_on_error() {
    // what the package installs as /etc/anyedge/anyedge.toml
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/anyedge.toml");
    let (ok, _, err) = anyedge(&["check", "-c", packaged]);
    assert!(ok, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pop]\nname = \"x\"\n\n[[service]]\nname = \"web\"\nlisten = [\"127.0.0.1:1\"]\n[[service.backend]]\nname = \"a\"\naddress = \"nowhere:80\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:9:", bad.display())), "{err}");
    assert!(err.contains("backend[0].address"), "{err}");
}

/// The example config prints secrets anyone can read: `check` (and `run`)
/// refuse each, naming the field; with secrets of one's own it is valid.
#[test]
fn check_refuses_the_secrets_printed_in_the_example() {
    let src = std::fs::read_to_string(EXAMPLE).unwrap();
    let line = 1 + src
        .lines()
        .position(|l| l.starts_with("token = \"change-me-to-a-long-random-string\""))
        .expect("the example's admin.token");
    let want = format!(
        "{EXAMPLE}:{line}:9: admin.token: is the example value from the documentation: generate your own, e.g. `openssl rand -hex 32`"
    );
    let (ok, _, err) = anyedge(&["check", "-c", EXAMPLE]);
    assert!(!ok);
    assert!(err.contains(&want), "want {want:?} in {err}");
    // `run` refuses it before anything starts
    let (ok, _, err) = anyedge(&["run", "-c", EXAMPLE]);
    assert!(!ok);
    assert!(err.contains(&want), "want {want:?} in {err}");

    let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/zones/");
    let src = src.replace("\"zones/", &format!("\"{zones}"));
    let secrets = [
        (
            "token = \"change-me-to-a-long-random-string\"",
            "token = \"0123456789abcdef0123456789abcdef\"",
            "admin.token",
        ),
        (
            "password = \"md5-shared-secret\"",
            "password = \"own-md5-key\"",
            "bgp.peer[0].password",
        ),
        (
            "cookie_secret = \"6f1c9b0e5d2a47e38b1f0c9d7a6e5b4c\"",
            "cookie_secret = \"00112233445566778899aabbccddeeff\"",
            "dns.cookie_secret",
        ),
        (
            "secret = \"bWlncmF0aW9uLWtleS1leGFtcGxlLTAxMjM0NTY3OA==\"",
            "secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"",
            "dns.tsig_key[0].secret",
        ),
    ];
    // one after the other: each is refused, naming its field
    let mut src = src;
    for (printed, own, field) in secrets {
        assert!(src.contains(printed), "the example no longer has {printed}");
        let (ok, out) = check(&src);
        assert!(
            !ok && out.contains(&format!(": {field}: is the example value from the documentation")),
            "{field}: {out}"
        );
        src = src.replace(printed, own);
    }
    let (ok, out) = check(&src);
    assert!(ok, "{out}");
    assert!(out.contains("OK (pop \"fra1\""), "{out}");
}

/// `anyedge check -c <config>`: (success, stdout + stderr).
fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&path.display().to_string(), "c.toml");
    (out.status.success(), text)
}

const WEB: &str = "[pop]\nname = \"x\"\n[[service]]\nname = \"web\"\nlisten = [\"127.0.0.1:18080\"]\n";
const BACKEND: &str = "[[service.backend]]\nname = \"a\"\naddress = \"127.0.0.1:19001\"\n";

/// Configs that `check` used to call OK and that broke at run time: each is
/// refused now, with the line and the field.
#[test]
fn check_rejects_configs_that_break_at_run_time() {
    let cases: &[(String, &str)] = &[
        // every proxied connection panicked (Instant + Duration overflow)
        (
            format!("{WEB}[service.timeouts]\nidle = \"18446744073709551615s\"\n{BACKEND}"),
            "c.toml:7:8: service \"web\".timeouts.idle: ",
        ),
        (
            format!("{WEB}[service.timeouts]\nconnect = \"18446744073709551615s\"\n{BACKEND}"),
            "c.toml:7:11: service \"web\".timeouts.connect: ",
        ),
        // the admin API shared its port with a service (SO_REUSEPORT)
        (
            format!("{WEB}{BACKEND}[admin]\nlisten = \"127.0.0.1:18080\"\n"),
            "c.toml:10:10: admin.listen: 127.0.0.1:18080 is also service \"web\".listen[0] (line 5)",
        ),
        // two services on one port, one of them on the wildcard
        (
            format!("{WEB}{BACKEND}[[service]]\nname = \"api\"\nlisten = [\"0.0.0.0:18080\"]\n{BACKEND}"),
            "c.toml:11:11: service \"api\".listen[0]: 0.0.0.0:18080 overlaps service \"web\".listen[0]",
        ),
        // dns on a service's port
        (
            format!("{WEB}{BACKEND}[dns]\nlisten = [\"127.0.0.1:18080\"]\n"),
            "c.toml:10:11: dns.listen[0]: ",
        ),
        // a backend that is the service itself: one request looped
        (
            format!(
                "{WEB}proxy_protocol = \"none\"\n{}",
                BACKEND.replace("127.0.0.1:19001", "127.0.0.1:18080")
            ),
            "c.toml:9:11: service \"web\".backend[0].address: 127.0.0.1:18080 is our own listener",
        ),
        (
            WEB.replace("18080", "0") + BACKEND,
            "c.toml:5:11: service \"web\".listen: port must not be 0",
        ),
        // cross-checks used to point at 1:1
        (
            format!("{WEB}{BACKEND}[[service]]\nname = \"web\"\nlisten = [\"127.0.0.1:18081\"]\n{BACKEND}"),
            "c.toml:10:8: service[1].name: duplicate service name",
        ),
        // TOML type errors used to be labelled with the value (`99999999999:`)
        (
            format!("{WEB}{BACKEND}weight = 99999999999\n"),
            "c.toml:9:10: service \"web\".backend[0].weight: ",
        ),
    ];
    for (config, want) in cases {
        let (ok, out) = check(config);
        assert!(!ok, "check accepted:\n{config}\n{out}");
        assert!(out.contains(want), "want {want:?} in:\n{out}\nfor:\n{config}");
    }
}

#[test]
fn check_warns_when_every_backend_has_weight_0() {
    let (ok, out) = check(&format!("{WEB}{BACKEND}weight = 0\n"));
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: c.toml:4: service \"web\".backend: every backend has weight 0"),
        "{out}"
    );
    let (ok, out) = check(&format!("{WEB}{BACKEND}"));
    assert!(ok && !out.contains("warning"), "{out}");
}

/// A typo in a key names the nearest valid key; a value of the wrong type
/// names the service as the checks after parsing do.
#[test]
fn check_suggests_the_nearest_key_and_names_the_service() {
    let (ok, out) = check(&format!("{WEB}{BACKEND}wieght = 2\n"));
    assert!(!ok);
    assert!(
        out.contains("c.toml:9:1: service \"web\".backend[0].wieght: unknown field `wieght`, expected one of")
            && out.contains("(did you mean \"weight\"?)"),
        "{out}"
    );
    let (ok, out) = check(&WEB.replace("listen =", "balance = 1\nlisten ="));
    assert!(!ok);
    assert!(out.contains("c.toml:5:11: service \"web\".balance: "), "{out}");
}

/// `--help` says what each option is for, `run --help` what each signal
/// does, and `--log-format` is offered only where something logs.
#[test]
fn help_texts() {
    let help = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--help");
        let (ok, out, err) = anyedge(&a);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let run = help(&["run"]);
    for want in [
        "-c, --config <FILE>",
        "The configuration file",
        "--log-format <LOG_FORMAT>",
        "SIGHUP           reload the configuration",
        "SIGTERM, SIGINT  graceful stop",
        "SIGUSR1          log a status report",
        "SIGUSR2          binary upgrade",
    ] {
        assert!(run.contains(want), "run --help lacks {want:?}:\n{run}");
    }
    assert!(help(&["demo"]).contains("--log-format"));
    for cmd in [&["check"][..], &["ctl", "status"], &["dns", "compare"], &["lab", "up"]] {
        let out = help(cmd);
        assert!(
            !out.contains("--log-format"),
            "{cmd:?} --help offers --log-format:\n{out}"
        );
    }
    // the option's line carries its help
    let line_has =
        |out: &str, opt: &str, text: &str| out.lines().any(|l| l.trim_start().starts_with(opt) && l.contains(text));
    let check = help(&["check"]);
    assert!(
        line_has(&check, "-c, --config <FILE>", "The configuration file to check"),
        "{check}"
    );
    for sub in ["drain", "undrain"] {
        let out = help(&["ctl", sub]);
        for (opt, text) in [
            ("--service <SERVICE>", "The service of the backend"),
            ("--backend <BACKEND>", "The backend"),
            ("--prefix <PREFIX>", "An anycast prefix"),
        ] {
            assert!(
                line_has(&out, opt, text),
                "ctl {sub} --help: {opt} lacks {text:?}:\n{out}"
            );
        }
    }
    let out = help(&["ctl", "reload-zone"]);
    assert!(line_has(&out, "<ZONE>", "The zone's name"), "{out}");
    // no longer a global option
    let (ok, _, err) = anyedge(&["check", "--log-format", "json"]);
    assert!(!ok && err.contains("--log-format"), "{err}");
}

/// `[admin] token_file`: the token is read from the file at start and again
/// at every reload (rotation without a restart); a trailing newline is
/// ignored; an unreadable file is refused, naming the field.
#[test]
fn admin_token_file_is_read_at_start_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("admin-token");
    let port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = format!(
        "[pop]\nname = \"x\"\n[admin]\nlisten = \"{admin}\"\ntoken_file = {:?}\n",
        token_path.display().to_string()
    );
    // unreadable (absent): refused with the field, at check and at run
    let (ok, out) = check(&config);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "c.toml:5:14: admin.token_file: cannot read {:?}: ",
            token_path.display().to_string()
        )),
        "{out}"
    );

    let (one, two) = ("token-one-0123456789abcdef", "token-two-0123456789abcdef");
    std::fs::write(&token_path, format!("{one}\n")).unwrap();
    let (ok, out) = check(&config);
    assert!(ok, "{out}");
    let e = Anyedge::start(&config, admin);
    let reload = |token: Option<&str>| http(admin, "POST", "/api/v1/reload", token).0;
    assert_eq!(reload(None), 401);
    assert_eq!(reload(Some(two)), 401);
    assert_eq!(reload(Some(one)), 200, "{}", e.log());
    // rotate: the reload (authorized by the old token) reads the new one
    std::fs::write(&token_path, format!("{two}\n")).unwrap();
    assert_eq!(reload(Some(one)), 200, "{}", e.log());
    assert_eq!(reload(Some(one)), 401, "{}", e.log());
    assert_eq!(reload(Some(two)), 200, "{}", e.log());
    // unreadable at reload: rejected, the running token kept
    std::fs::remove_file(&token_path).unwrap();
    let (status, body) = http(admin, "POST", "/api/v1/reload", Some(two));
    assert!(status >= 400 && body.contains("admin.token_file"), "{status} {body}");
    assert_eq!(reload(Some(one)), 401);
    std::fs::write(&token_path, two).unwrap();
    assert_eq!(reload(Some(two)), 200, "{}", e.log());
}
