//! The draft's HTTP API on a running node: every endpoint and status code with the
//! draft's example bodies, the whole sequence diagram, the long-poll extension, gateways
//! of different nodes sharing a secret, and the preview page in a headless browser.

use std::time::Duration;

use serde_json::json;

use crate::support::{HttpReply, NodeProc, eventually, http};

const INITIATOR: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const RECIPIENT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const STRANGER: &str = "3b241101-e2bb-4255-8caf-4136c566a962";

/// The draft's CreateMailbox example body, with a real base64 payload, a future expiry and
/// a field the draft does not define (unknown fields are ignored).
pub(crate) fn create_body(expiration: &str) -> Vec<u8> {
    json!({
        "displayInformation": {
            "title": "Hotel Pass",
            "description": "Some Hotel Pass",
            "imageURL": "https://example.com/sharingImage"
        },
        "payload": {"type": "AEAD_AES_128_GCM", "data": "RkRFQy4uLjk4NzY1NDMyMQ=="},
        "notificationToken": {"type": "com.apple.apns", "tokenData": "APNS...1234"},
        "mailboxConfiguration": {"accessRights": "RWD", "expiration": expiration},
        "aFieldFromALaterDraft": {"ignored": true}
    })
    .to_string()
    .into_bytes()
}

pub(crate) fn update_body(data: &str) -> Vec<u8> {
    json!({
        "payload": {"type": "AEAD_AES_128_GCM", "data": data},
        "notificationToken": {"type": "com.apple.apns", "tokenData": "APNS...1234"}
    })
    .to_string()
    .into_bytes()
}

fn far_future() -> String {
    rfc3339_in(3 * 24 * 3600)
}

struct Api {
    http: String,
}

impl Api {
    fn create(&self, claim: &str, rid: &str, body: &[u8]) -> HttpReply {
        http(
            "POST",
            &self.http,
            "/v1/m",
            &[("Mailbox-Device-Claim", claim), ("Mailbox-Request-ID", rid)],
            body,
        )
    }
    fn read(&self, path: &str, claim: &str) -> HttpReply {
        http(
            "POST",
            &self.http,
            path,
            &[
                ("Mailbox-Device-Claim", claim),
                ("Mailbox-Request-ID", "read"),
            ],
            b"",
        )
    }
    fn update(&self, path: &str, claim: &str, rid: &str, data: &str) -> HttpReply {
        http(
            "PUT",
            &self.http,
            path,
            &[("Mailbox-Device-Claim", claim), ("Mailbox-Request-ID", rid)],
            &update_body(data),
        )
    }
    fn delete(&self, path: &str, claim: &str, rid: &str) -> HttpReply {
        http(
            "DELETE",
            &self.http,
            path,
            &[("Mailbox-Device-Claim", claim), ("Mailbox-Request-ID", rid)],
            b"",
        )
    }
    fn relinquish(&self, path: &str, claim: &str, rid: &str) -> HttpReply {
        http(
            "PATCH",
            &self.http,
            path,
            &[("Mailbox-Device-Claim", claim), ("Mailbox-Request-ID", rid)],
            b"",
        )
    }
    /// Creates a mailbox; returns its path `/v1/m/{id}`.
    fn new_mailbox(&self, rid: &str) -> String {
        let r = self.create(INITIATOR, rid, &create_body(&far_future()));
        assert_eq!(r.status, 200, "{}", r.body);
        path_of(&r)
    }
}

fn path_of(r: &HttpReply) -> String {
    let link = r.json()["urlLink"].as_str().unwrap().to_owned();
    link[link.find("/v1/m/").unwrap()..].to_owned()
}

fn data_of(r: &HttpReply) -> String {
    r.json()["payload"]["data"].as_str().unwrap().to_owned()
}

#[test]
fn every_endpoint_and_status_code() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(
        &tmp.path().join("node"),
        &["--public-url", "https://relay.example.test"],
    );
    let api = Api {
        http: node.http.clone(),
    };

    // CreateMailbox: 200, the request ID echoed, the urlLink on the public base URL.
    const C1: &str = "9f3c1d2e-6b1a-4c8e-9a7d-2f4b6c8d0e1f";
    let r = api.create(INITIATOR, C1, &create_body(&far_future()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("Mailbox-Request-ID"), Some(C1));
    let link = r.json()["urlLink"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with("https://relay.example.test/v1/m/"),
        "{link}"
    );
    assert_eq!(r.json()["isPushNotificationSupported"], false);
    let path = path_of(&r);
    // 201: the same request again creates nothing new.
    let again = api.create(INITIATOR, C1, &create_body(&far_future()));
    assert_eq!(again.status, 201);
    assert_eq!(path_of(&again), path);
    assert_eq!(again.header("Mailbox-Request-ID"), Some(C1));
    // Only a UUID is echoed: markup or any other text sent as the request ID is not.
    for rid in ["c-1", "<script>alert(1)</script>"] {
        let r = api.create(INITIATOR, rid, &create_body(&far_future()));
        assert_eq!(r.header("Mailbox-Request-ID"), None, "{rid}");
    }
    // 400: malformed JSON, missing fields, wrong types, bad or missing claim, bad expiry.
    for (body, claim) in [
        (b"{not json".to_vec(), INITIATOR),
        (br#"{"payload":{"type":"AEAD_AES_128_GCM","data":"QQ=="}}"#.to_vec(), INITIATOR),
        (br#"{"payload":"x","displayInformation":{"title":"a","description":"b","imageURL":"c"}}"#.to_vec(), INITIATOR),
        (br#"{"payload":{"type":"ROT13","data":"QQ=="},"displayInformation":{"title":"a","description":"b","imageURL":"c"}}"#.to_vec(), INITIATOR),
        (br#"{"payload":{"type":"AEAD_AES_128_GCM","data":"***"},"displayInformation":{"title":"a","description":"b","imageURL":"c"}}"#.to_vec(), INITIATOR),
        (create_body("tomorrow"), INITIATOR),
        (create_body("2001-01-01T00:00:00Z"), INITIATOR),
        (create_body(&far_future()), "not-a-uuid"),
    ] {
        let r = api.create(claim, "0c8e2f4a-1b3d-4e5f-8a6b-7c9d0e1f2a3b", &body);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(r.json()["error"]["message"].is_string());
        assert_eq!(
            r.header("Mailbox-Request-ID"),
            Some("0c8e2f4a-1b3d-4e5f-8a6b-7c9d0e1f2a3b")
        );
    }
    let r = http(
        "POST",
        &node.http,
        "/v1/m",
        &[("Mailbox-Request-ID", "c-2")],
        &create_body(&far_future()),
    );
    assert_eq!(r.status, 400, "the device claim is required");
    // 413: an oversized body is refused before it is read.
    let huge = vec![b'x'; 200 * 1024];
    let r = api.create(INITIATOR, "c-3", &huge);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "too_large");

    // ReadSecureContentFromMailbox: the first device binds (200), another gets 401, an
    // unknown mailbox 404.
    let r = api.read(&path, RECIPIENT);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(data_of(&r), "RkRFQy4uLjk4NzY1NDMyMQ==");
    assert_eq!(r.json()["displayInformation"]["title"], "Hotel Pass");
    assert!(r.json()["expiration"].as_str().unwrap().ends_with('Z'));
    assert_eq!(api.read(&path, STRANGER).status, 401);
    assert_eq!(
        api.read("/v1/m/0c2c5aa8-4f2f-4c2a-8b65-37a0a7f0a7a1", RECIPIENT)
            .status,
        404
    );
    assert_eq!(api.read(&path, "nope").status, 400);

    // UpdateMailbox: 200, 201 for the same request ID, 400 bad body, 401 stranger, 404.
    let r = api.update(&path, RECIPIENT, "u-1", "bWVzc2FnZSAy");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["isPushNotificationSupported"], false);
    assert_eq!(
        api.update(&path, RECIPIENT, "u-1", "ZGlmZmVyZW50").status,
        201
    );
    let r = http(
        "PUT",
        &node.http,
        &path,
        &[
            ("Mailbox-Device-Claim", RECIPIENT),
            ("Mailbox-Request-ID", "u-2"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(api.update(&path, STRANGER, "u-3", "QQ==").status, 401);
    assert_eq!(
        api.update(
            "/v1/m/0c2c5aa8-4f2f-4c2a-8b65-37a0a7f0a7a1",
            RECIPIENT,
            "u-4",
            "QQ=="
        )
        .status,
        404
    );
    // The duplicate stored nothing: the initiator reads the first update.
    assert_eq!(data_of(&api.read(&path, INITIATOR)), "bWVzc2FnZSAy");

    // ReadDisplayInformationFromMailbox: OpenGraph HTML; 404 for unknown.
    let r = http("GET", &node.http, &path, &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        r.body
            .contains(r#"<meta property="og:title" content="Hotel Pass" />"#),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(r#"og:image" content="https://example.com/sharingImage""#)
    );
    assert!(!r.body.contains("<script"));
    assert_eq!(
        http(
            "GET",
            &node.http,
            "/v1/m/0c2c5aa8-4f2f-4c2a-8b65-37a0a7f0a7a1",
            &[],
            b""
        )
        .status,
        404
    );

    // RelinquishMailbox: 401 for a stranger, 200, 201 again, then another device binds.
    assert_eq!(api.relinquish(&path, STRANGER, "p-0").status, 401);
    assert_eq!(api.relinquish(&path, RECIPIENT, "p-1").status, 200);
    assert_eq!(api.relinquish(&path, RECIPIENT, "p-1").status, 201);
    let r = api.read(&path, STRANGER);
    assert_eq!(
        r.status, 200,
        "after relinquish another device binds: {}",
        r.body
    );
    assert_eq!(
        api.read(&path, RECIPIENT).status,
        401,
        "the relinquished device is out"
    );

    // DeleteMailbox: 401 for a non-party, 200, then the mailbox is gone (410) and a
    // second delete finds nothing (404).
    assert_eq!(api.delete(&path, RECIPIENT, "d-0").status, 401);
    assert_eq!(api.delete(&path, INITIATOR, "d-1").status, 200);
    assert_eq!(api.read(&path, STRANGER).status, 410);
    let r = eventually(Duration::from_secs(5), "a later delete", || {
        let r = api.delete(&path, INITIATOR, "d-2");
        (r.status != 200).then_some(r)
    });
    assert_eq!(r.status, 404);
    assert_eq!(
        api.delete(
            "/v1/m/0c2c5aa8-4f2f-4c2a-8b65-37a0a7f0a7a1",
            INITIATOR,
            "d-3"
        )
        .status,
        404
    );
    // Unknown endpoints answer JSON errors too.
    assert_eq!(http("GET", &node.http, "/v1/nothing", &[], b"").status, 404);
}

#[test]
fn the_drafts_sequence_diagram_with_long_polls() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let api = Api {
        http: node.http.clone(),
    };
    let path = api.new_mailbox("flow-1");
    // Recipient reads (binds), then updates; the initiator reads it; and so on.
    assert_eq!(
        data_of(&api.read(&path, RECIPIENT)),
        "RkRFQy4uLjk4NzY1NDMyMQ=="
    );
    for (i, (from, to)) in [
        (RECIPIENT, INITIATOR),
        (INITIATOR, RECIPIENT),
        (RECIPIENT, INITIATOR),
    ]
    .into_iter()
    .enumerate()
    {
        let data = base64_of(&format!("message {}", i + 2));
        assert_eq!(
            api.update(&path, from, &format!("flow-u{i}"), &data).status,
            200
        );
        let r = api.read(&path, to);
        assert_eq!(r.status, 200);
        assert_eq!(data_of(&r), data);
    }
    // Long-poll: the initiator waits; the recipient updates; the wait ends with it.
    let http_addr = node.http.clone();
    let p = path.clone();
    let waiting = std::thread::spawn(move || {
        http(
            "POST",
            &http_addr,
            &format!("{p}?wait=60"),
            &[("Mailbox-Device-Claim", INITIATOR)],
            b"",
        )
    });
    eventually(Duration::from_secs(30), "the long-poll to wait", || {
        crate::single_node::http_get(&node.admin, "/metrics")
            .contains("tigress_long_polls_waiting 1")
            .then_some(())
    });
    let data = base64_of("message 5");
    assert_eq!(api.update(&path, RECIPIENT, "flow-u9", &data).status, 200);
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(data_of(&r), data);
    assert_eq!(r.header("Mailbox-Sequence"), Some("3"));
    // The recipient deletes at the end, as in the diagram.
    assert_eq!(api.delete(&path, RECIPIENT, "flow-d").status, 200);
    assert_eq!(api.read(&path, INITIATOR).status, 410);
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn an_expired_mailbox_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let api = Api {
        http: node.http.clone(),
    };
    let expiration = rfc3339_in(2);
    let r = api.create(INITIATOR, "exp-1", &create_body(&expiration));
    assert_eq!(r.status, 200, "{}", r.body);
    let path = path_of(&r);
    let status = eventually(Duration::from_secs(20), "expiry", || {
        let r = api.read(&path, RECIPIENT);
        (r.status != 200).then_some(r.status)
    });
    assert!(status == 410 || status == 404, "{status}");
}

#[test]
fn a_native_share_without_display_information_has_no_preview() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let cli = crate::support::Cli::new(&tmp.path().join("alice"), &node.addr());
    let payload = crate::support::file(tmp.path(), "p", b"native");
    let hidden =
        String::from_utf8(cli.ok(&["share", "--payload", payload.to_str().unwrap()])).unwrap();
    let shown = String::from_utf8(cli.ok(&[
        "share",
        "--payload",
        payload.to_str().unwrap(),
        "--title",
        "Car <Key>",
        "--description",
        "My car",
    ]))
    .unwrap();
    let path = |url: &str| url[url.find("/v1/m/").unwrap()..url.find('?').unwrap()].to_owned();
    assert_eq!(
        http("GET", &node.http, &path(hidden.trim()), &[], b"").status,
        404
    );
    let r = http("GET", &node.http, &path(shown.trim()), &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("og:title\" content=\"Car &lt;Key&gt;\""),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_of_different_nodes_share_the_secret() {
    let secret = "5a".repeat(32);
    let cluster = tigress_bootstrap::Cluster::start(5, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.gateway_secret = Some(secret.clone());
    })
    .await
    .unwrap();
    let gw = |i: usize| cluster.node(i).unwrap().http_addr().unwrap().to_string();
    let (g0, g1, g3, g4) = (gw(0), gw(1), gw(3), gw(4));
    let path = tokio::task::spawn_blocking(move || {
        let path = Api { http: g0.clone() }.new_mailbox("cl-1");
        // Reads and updates through other gateways: the same devices everywhere.
        assert_eq!(
            data_of(&Api { http: g3.clone() }.read(&path, RECIPIENT)),
            "RkRFQy4uLjk4NzY1NDMyMQ=="
        );
        assert_eq!(
            Api { http: g1.clone() }
                .update(&path, RECIPIENT, "cl-u1", "QkJC")
                .status,
            200
        );
        assert_eq!(
            data_of(&Api { http: g4.clone() }.read(&path, INITIATOR)),
            "QkJC"
        );
        // A repeated create through another gateway is recognised.
        assert_eq!(
            Api { http: g4.clone() }
                .create(INITIATOR, "cl-1", &create_body(&far_future()))
                .status,
            201
        );
        assert_eq!(Api { http: g1 }.read(&path, STRANGER).status, 401);
        path
    })
    .await
    .unwrap();
    assert!(path.starts_with("/v1/m/"));
    cluster.shutdown().await;
}

#[test]
fn the_preview_renders_in_a_headless_browser() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(chromium) = chromium else {
        eprintln!(
            "SKIPPED the_preview_renders_in_a_headless_browser: Debian's chromium is not installed \
             (.ci/run installs it with apt-get when it can)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let path = Api {
        http: node.http.clone(),
    }
    .new_mailbox("browser-1");
    let profile = tmp.path().join("chromium-profile");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("http://{}{path}", node.http))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"property="og:title" content="Hotel Pass""#),
        "{dom}"
    );
    assert!(dom.contains(r#"property="og:description" content="Some Hotel Pass""#));
    assert!(dom.contains(r#"property="og:image" content="https://example.com/sharingImage""#));
    assert!(dom.contains("<title>Hotel Pass</title>"));
}

/// The RFC 3339 UTC time `secs` from now.
fn rfc3339_in(secs: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(secs),
    )
    .to_string()
}
