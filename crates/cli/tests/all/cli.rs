//! The `tiktok-edge` binary: `up` serves the repository's spin.toml, prints its routes,
//! stops cleanly on SIGTERM, and refuses a bad manifest with a useful message.

use crate::{BIN, workspace};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// Kills `pid` after a minute, so a test waiting on its output fails instead of hanging.
fn watchdog(pid: u32) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
}

/// The lines `up` prints up to and including "Ready…".
fn banner(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines.map(Result::unwrap) {
        let ready = line.starts_with("Ready");
        out.push(line);
        if ready {
            return out;
        }
    }
    panic!("tiktok-edge ended before it was ready: {out:?}");
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn up_serves_the_repository_manifest_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .current_dir(workspace())
        .env("SPIN_VARIABLE_TIKTOK_API_BASE_URL", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    watchdog(child.id());
    let listing = banner(&mut BufReader::new(child.stdout.take().unwrap()).lines());
    assert_eq!(
        listing[1],
        "No TikTok app credentials set; TikTok calls go to http://127.0.0.1:9"
    );
    let addr = listing[0]
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        listing
            .iter()
            .any(|l| l.contains("pixel-collector: http://") && l.ends_with("/pixel/... (P2)")),
        "{listing:?}"
    );

    let response = http_get(&addr, "/info/accounts");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"api_base_url\":\"http://127.0.0.1:9\""),
        "the env variable overrides the default: {response}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "tiktok-edge exits cleanly on SIGTERM: {exit:?}"
    );
}

#[test]
fn up_refuses_a_bad_manifest_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/a\"\ncomponent = \"missing\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--manifest"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spin.toml")
            && stderr.contains("`trigger.http[0].component`: no [component.missing]"),
        "{stderr}"
    );
}

#[test]
fn up_without_credentials_runs_in_sandbox_mode_against_the_built_in_mock() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .current_dir(workspace())
        .env_remove("SPIN_VARIABLE_TIKTOK_API_BASE_URL")
        .env_remove("SPIN_VARIABLE_TIKTOK_APP_ID")
        .env_remove("SPIN_VARIABLE_TIKTOK_APP_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    watchdog(child.id());
    let listing = banner(&mut BufReader::new(child.stdout.take().unwrap()).lines());
    let addr = listing[0]
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let sandbox = &listing[1];
    assert!(
        sandbox.starts_with("Sandbox mode: no TikTok app credentials"),
        "{sandbox}"
    );
    let mock = sandbox
        .split("mock at http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();

    let info = http_get(&addr, "/info/accounts");
    assert!(
        info.contains(&format!("\"api_base_url\":\"http://{mock}\"")),
        "components are pointed at the mock: {info}"
    );
    let api = http_get(&mock, "/open_api/v1.3/advertiser/info/");
    assert!(
        api.contains("\"code\":40104"),
        "the mock answers as TikTok does: {api}"
    );

    // The admin commands go through the API, with the admin token `up` generated.
    assert!(
        listing
            .iter()
            .any(|l| l.starts_with("Admin token and token encryption key: generated in")),
        "{listing:?}"
    );
    let admin = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--url", &format!("http://{addr}"), "--data-dir"])
            .arg(data.path())
            .env_remove("TIKTOK_EDGE_ADMIN_TOKEN")
            .env_remove("SPIN_VARIABLE_ADMIN_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let (ok, out, err) = admin(&[
        "orgs",
        "create",
        "acme",
        "--return-url",
        "https://app.example.com/done",
    ]);
    assert!(ok && out.contains("\"id\": \"acme\""), "{out}{err}");
    let (ok, out, err) = admin(&["keys", "create", "acme", "--name", "ci"]);
    assert!(ok && out.contains("\"key\": \"tte_acme_"), "{out}{err}");
    let (ok, out, _) = admin(&["keys", "list", "acme"]);
    assert!(
        ok && out.contains("\"prefix\": \"tte_acme_") && !out.contains("\"key\""),
        "{out}"
    );
    let (ok, _, err) = admin(&["orgs", "create", "Not Valid"]);
    assert!(
        !ok && err.contains("400") && err.contains("field id"),
        "{err}"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
