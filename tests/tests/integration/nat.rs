//! Nodes on different hosts: network namespaces joined by veth pairs, one host behind a
//! NAT (nftables masquerade). A node behind the NAT, whose addresses nobody can dial back,
//! must stay out of every routing table and every replica set, and still serve its own
//! clients; public nodes on `auto` must find out, through AutoNAT, that they are public.
//!
//! The test needs root, `ip` and `nft`. `.ci/run` installs them and sets
//! `TIGRESS_REQUIRE_NETNS=1`, which turns their absence into a failure; elsewhere the
//! test says it was skipped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Cli, HttpReply, NodeProc, eventually, file, http};

/// Namespaces and links made for one test, removed when dropped.
struct Hosts {
    namespaces: Vec<String>,
}

impl Hosts {
    fn ns(&mut self, name: &str) -> String {
        let ns = format!("tg{}{name}", std::process::id() % 100_000);
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        exec(&ns, &["ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn exec(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all);
}

/// Whether this machine can make namespaces and NAT (root, `ip`, `nft`).
fn can_make_hosts() -> bool {
    let tool = |t: &str, flag: &str| {
        Command::new(t)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let ok = nix::unistd::geteuid().is_root() && tool("ip", "-V") && tool("nft", "--version");
    if !ok {
        assert!(
            std::env::var_os("TIGRESS_REQUIRE_NETNS").is_none(),
            "TIGRESS_REQUIRE_NETNS is set but this machine cannot make network namespaces \
             with NAT (needs root, ip and nft)"
        );
        eprintln!("skipped: network namespaces with NAT need root, ip and nft");
    }
    ok
}

/// An HTTP request made from inside the namespace `ns`.
fn http_in(ns: &str, addr: &str, path: &str) -> HttpReply {
    let (ns, addr, path) = (ns.to_owned(), addr.to_owned(), path.to_owned());
    std::thread::spawn(move || {
        let handle = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("namespace");
        nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("entering the namespace");
        http("GET", &addr, &path, &[], b"")
    })
    .join()
    .expect("HTTP thread")
}

/// The admin listener's `/status`.
fn health(ns: &str, node: &NodeProc) -> serde_json::Value {
    http_in(ns, &node.admin, "/status").json()
}

/// The value of an unlabelled gauge on `/metrics`.
fn gauge(ns: &str, node: &NodeProc, name: &str) -> u64 {
    let page = http_in(ns, &node.admin, "/metrics").body;
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} on /metrics"))
}

fn start(ns: &str, ip: &str, dir: &Path, config: &Path, extra: &[&str]) -> NodeProc {
    let mut args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        format!("/ip4/{ip}/tcp/0"),
        "--http".into(),
        format!("{ip}:0"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    NodeProc::spawn_in(Some(ns), &args)
}

/// Four public nodes on one host; behind a NAT, a node left on `auto` and one whose
/// operator wrongly set `public`. Neither NAT node enters a routing table or a replica
/// set (with R = 5 and four public nodes, either would be in every set if it did), and
/// clients behind the NAT share and accept through the `auto` one.
#[test]
fn a_node_behind_nat_is_a_client_and_never_a_replica() {
    if !can_make_hosts() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut hosts = Hosts {
        namespaces: Vec::new(),
    };
    let public = hosts.ns("p");
    let router = hosts.ns("r");
    let home = hosts.ns("h");
    let tag = std::process::id() % 100_000;
    let (p_if, r_out, h_if, r_in) = (
        format!("tp{tag}"),
        format!("tr{tag}"),
        format!("th{tag}"),
        format!("ti{tag}"),
    );
    // public host 10.77.1.1 — 10.77.1.2 router 10.77.2.1 — 10.77.2.2 home (NAT).
    run(&[
        "ip", "link", "add", &p_if, "type", "veth", "peer", "name", &r_out,
    ]);
    run(&["ip", "link", "set", &p_if, "netns", &public]);
    run(&["ip", "link", "set", &r_out, "netns", &router]);
    run(&[
        "ip", "link", "add", &h_if, "type", "veth", "peer", "name", &r_in,
    ]);
    run(&["ip", "link", "set", &h_if, "netns", &home]);
    run(&["ip", "link", "set", &r_in, "netns", &router]);
    for (ns, link, addr) in [
        (&public, &p_if, "10.77.1.1/24"),
        (&router, &r_out, "10.77.1.2/24"),
        (&router, &r_in, "10.77.2.1/24"),
        (&home, &h_if, "10.77.2.2/24"),
    ] {
        exec(ns, &["ip", "addr", "add", addr, "dev", link]);
        exec(ns, &["ip", "link", "set", link, "up"]);
    }
    exec(
        &home,
        &["ip", "route", "add", "default", "via", "10.77.2.1"],
    );
    exec(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    exec(&router, &["nft", "add", "table", "ip", "nat"]);
    exec(
        &router,
        &[
            "nft",
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        ],
    );
    exec(
        &router,
        &[
            "nft",
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            "oifname",
            &r_out,
            "masquerade",
        ],
    );

    // All public nodes share one address here: no prefix limits. Short rounds.
    let config = file(
        tmp.path(),
        "node.toml",
        b"replication = 5\nmax_peers_per_prefix = 0\nmax_peers_per_prefix_per_bucket = 0\n\
          bootstrap_interval_secs = 2\nanti_entropy_interval_secs = 1\n",
    );
    let seed = start(
        &public,
        "10.77.1.1",
        &tmp.path().join("p0"),
        &config,
        &["--reachability", "auto"],
    );
    let mut publics = vec![seed];
    for i in 1..4 {
        let seed = publics[0].addr();
        publics.push(start(
            &public,
            "10.77.1.1",
            &tmp.path().join(format!("p{i}")),
            &config,
            &["--reachability", "auto", "--bootstrap", &seed],
        ));
    }
    let seed = publics[0].addr();
    let behind = start(
        &home,
        "10.77.2.2",
        &tmp.path().join("nat-auto"),
        &config,
        &["--bootstrap", &seed],
    );
    let misconfigured = start(
        &home,
        "10.77.2.2",
        &tmp.path().join("nat-public"),
        &config,
        &["--reachability", "public", "--bootstrap", &seed],
    );

    // AutoNAT: every public node is dialed back and turns public; then each routes to
    // the three others.
    for node in &publics {
        eventually(
            Duration::from_secs(90),
            "a public node turning public",
            || {
                let h = health(&public, node);
                (h["reachability"] == "public").then_some(())
            },
        );
        assert_eq!(health(&public, node)["reachability_setting"], "auto");
        eventually(Duration::from_secs(60), "public routing tables", || {
            (gauge(&public, node, "tigress_routing_table_peers") >= 3).then_some(())
        });
    }

    // Clients behind the NAT, through the NAT node.
    let alice = Cli::new(&tmp.path().join("alice"), &behind.addr()).in_netns(&home);
    let bob = Cli::new(&tmp.path().join("bob"), &behind.addr()).in_netns(&home);
    let forbidden = [behind.peer_id.clone(), misconfigured.peer_id.clone()];
    let mut public_ids: Vec<String> = publics.iter().map(|n| n.peer_id.clone()).collect();
    public_ids.sort();
    for round in 0..3 {
        let payload = file(tmp.path(), "key", format!("home key {round}").as_bytes());
        let out = alice.ok(&["share", "--payload", payload.to_str().unwrap()]);
        let url = String::from_utf8(out)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("http"))
            .expect("a share URL")
            .to_owned();
        assert_eq!(
            bob.ok(&["accept", &url]),
            format!("home key {round}").as_bytes()
        );
        let status: serde_json::Value =
            serde_json::from_slice(&alice.ok(&["status", &url, "--json"])).unwrap();
        let mut replicas: Vec<String> = status["replicas"]
            .as_array()
            .expect("replicas in the status")
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        for id in &forbidden {
            assert!(!replicas.contains(id), "{id} behind NAT is a replica");
        }
        replicas.sort();
        assert_eq!(
            replicas, public_ids,
            "the four public nodes hold the mailbox"
        );
    }

    // The NAT node knows it is private; nobody routes to either NAT node.
    let h = health(&home, &behind);
    assert_eq!(h["reachability"], "private");
    assert_eq!(h["reachability_setting"], "auto");
    assert_eq!(health(&home, &misconfigured)["reachability"], "public");
    for node in &publics {
        assert_eq!(
            gauge(&public, node, "tigress_routing_table_peers"),
            3,
            "a public node routes only to the other public nodes"
        );
    }
    drop(publics);
    drop((behind, misconfigured));
}
