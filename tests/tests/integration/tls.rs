//! HTTPS on the public port: with a certificate from files (a test CA), and with
//! certificates from an ACME CA (Debian's `pebble`, the ACME test server, on loopback).
//! Requests go through `curl`, which checks the chain and the name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::support::NodeProc;

/// A test CA and a certificate it issued for `names`: (CA PEM, certificate PEM, key PEM).
fn issue(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tigress test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `curl -sS -i` with the given extra arguments: (exit success, output).
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("running curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether the answer's status line says 200 (HTTP/1.1 or HTTP/2, as ALPN chose).
fn is_200(out: &str) -> bool {
    out.lines()
        .next()
        .is_some_and(|l| l.starts_with("HTTP/") && l.split_whitespace().nth(1) == Some("200"))
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn the_gateway_serves_https_with_a_certificate_from_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = issue(&["localhost", "127.0.0.1"]);
    let ca = write(tmp.path(), "ca.pem", &ca);
    let cert = write(tmp.path(), "cert.pem", &cert);
    let key = write(tmp.path(), "key.pem", &key);
    let node = NodeProc::start(
        &tmp.path().join("node"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let base = format!("https://localhost:{}", port_of(&node.http));
    let ca = ca.to_str().unwrap();
    let resolve = format!("localhost:{}:127.0.0.1", port_of(&node.http));
    // /health over HTTPS, checked against the CA; HSTS on every answer.
    let (ok, out) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &format!("{base}/health"),
    ]);
    assert!(ok, "{out}");
    assert!(is_200(&out), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
    // The draft API answers over it, and its links are https.
    let (ok, out) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "-X",
        "POST",
        "-H",
        "Mailbox-Device-Claim: 0f8fad5b-d9cb-469f-a165-70867728950e",
        "-H",
        "Mailbox-Request-ID: tls-1",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"displayInformation":{"title":"t","description":"d","imageURL":"https://example.com/i"},"payload":{"type":"AEAD_AES_128_GCM","data":"QUFB"}}"#,
        &format!("{base}/v1/m"),
    ]);
    assert!(ok, "{out}");
    assert!(is_200(&out), "{out}");
    assert!(out.contains("\"urlLink\":\"https://127.0.0.1:"), "{out}");
    // The OHTTP key configuration, as a draft client fetches it from the target itself.
    let (ok, out) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &format!("{base}/.well-known/ohttp-gateway"),
    ]);
    assert!(ok && out.contains("application/ohttp-keys"), "{out}");
    // A certificate the client does not trust is refused; plain HTTP gets no answer.
    let (ok, _) = curl(&["--resolve", &resolve, &format!("{base}/health")]);
    assert!(!ok, "an untrusted certificate must fail");
    let (ok, out) = curl(&[&format!("http://{}/health", node.http)]);
    assert!(!(ok && is_200(&out)), "{out}");
}

/// Pebble with its validation switched off (it vouches for any domain), on free ports.
struct Pebble {
    child: Child,
    directory: String,
    management: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_pebble(dir: &Path, cert: &Path, key: &Path) -> Pebble {
    let (api, management) = (free_port(), free_port());
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    let config = write(dir, "pebble.json", &config.to_string());
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .env("PEBBLE_VA_ALWAYS_VALID", "1")
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting pebble");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pebble did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Pebble {
        child,
        directory: format!("https://127.0.0.1:{api}/dir"),
        management: format!("https://127.0.0.1:{management}"),
    }
}

#[test]
fn the_gateway_gets_its_certificate_from_an_acme_ca() {
    let found = Command::new("pebble").arg("-version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("TIGRESS_REQUIRE_PEBBLE").is_none(),
            "pebble is required (TIGRESS_REQUIRE_PEBBLE) but not installed"
        );
        eprintln!("skipped: Debian's pebble (the ACME test server) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = issue(&["localhost", "127.0.0.1"]);
    let ca = write(tmp.path(), "ca.pem", &ca);
    let pebble = start_pebble(
        tmp.path(),
        &write(tmp.path(), "pebble-cert.pem", &cert),
        &write(tmp.path(), "pebble-key.pem", &key),
    );
    let node = NodeProc::start(
        &tmp.path().join("node"),
        &[
            "--acme-domain",
            "relay.tigress.test",
            "--acme-contact",
            "ops@tigress.test",
            "--acme-directory",
            &pebble.directory,
            "--acme-root",
            ca.to_str().unwrap(),
        ],
    );
    // Pebble's root, from its management interface, is what the node's certificate
    // chains to once issued.
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        &format!("{}/roots/0", pebble.management),
    ]);
    assert!(ok, "{out}");
    let root = &out[out.find("-----BEGIN").expect("a PEM root")..];
    let root = write(tmp.path(), "pebble-root.pem", root);
    let resolve = format!("relay.tigress.test:{}:127.0.0.1", port_of(&node.http));
    let url = format!("https://relay.tigress.test:{}/health", port_of(&node.http));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, out) = curl(&[
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ]);
        if ok && is_200(&out) {
            assert!(
                out.to_ascii_lowercase()
                    .contains("strict-transport-security"),
                "{out}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from the ACME CA within 90 s: {out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
