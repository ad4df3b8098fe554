//! The `tigress` command line: argument parsing and output. `main.rs` only calls [`run`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use libp2p::Multiaddr;
use tigress_protocol::ShareUrl;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::invitation::Vertical;
use tigress_protocol::record::{DisplayInfo, Policy, Rights};
use tigress_protocol::session::ShareOptions;
use tigress_protocol::wire::BoundedString;

use crate::{Client, ClientError, StateDir};

/// The default node address.
pub const DEFAULT_NODE: &str = "/ip4/127.0.0.1/tcp/4001";

/// Share digital credentials through the tigress relay network.
#[derive(Debug, Parser)]
#[command(name = "tigress", version, about)]
pub struct Cli {
    /// The entry node's multiaddr (with or without /p2p/<peer-id>).
    #[arg(long, global = true, env = "TIGRESS_NODE")]
    node: Option<String>,
    /// A cluster file (cluster.json of `tigress-cluster up`): a random node of it is the
    /// entry (unless `--node` names one), and up to three others are second entries, to
    /// check the replicas an entry names and to retry a write it did not prove stored.
    #[arg(long, global = true, env = "TIGRESS_CLUSTER")]
    cluster: Option<PathBuf>,
    /// Send requests straight to the node instead of through a relay (by default each
    /// request goes through a relay to a node that carries it out, so that no single node
    /// learns both who you are and which share you use).
    #[arg(long, global = true, env = "TIGRESS_DIRECT")]
    direct: bool,
    /// The local IP address connections leave from (on a host with several; by default
    /// the system picks one).
    #[arg(long, global = true, env = "TIGRESS_SOURCE_ADDR", value_name = "IP")]
    source: Option<std::net::IpAddr>,
    /// The state directory (default: the platform data directory, `tigress`).
    #[arg(long, global = true, env = "TIGRESS_STATE")]
    state: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Share a credential: prints the invitation URL.
    Share {
        /// The first payload.
        #[arg(long)]
        payload: PathBuf,
        /// Lifetime, e.g. 24h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many recipients may claim (1-16).
        #[arg(long, default_value_t = 1)]
        max_recipients: u8,
        /// The credential vertical: a (general), h (home) or c (car).
        #[arg(long, default_value = "a")]
        vertical: Vertical,
        /// The recipients' access rights, a combination of R, W, D (the sender keeps all).
        #[arg(long, default_value = "RWD")]
        rights: Rights,
        /// Public title for the preview page (making display information public).
        #[arg(long)]
        title: Option<String>,
        /// Public description for the preview page.
        #[arg(long)]
        description: Option<String>,
        /// Public image URL for the preview page.
        #[arg(long)]
        image_url: Option<String>,
        /// Also print the URL as a terminal QR code (on stderr).
        #[arg(long)]
        qr: bool,
        /// The base of the share URL: the site the invitation opens (its fragment, the
        /// secret, is readable by that site's pages). Default: the public URL of the node
        /// named with --node.
        #[arg(long, env = "TIGRESS_BASE_URL")]
        base_url: Option<String>,
    },
    /// Open and claim an invitation: writes the first payload.
    Accept {
        /// The invitation URL.
        url: String,
        /// Write the payload here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Send the next message of a share.
    Send {
        /// The invitation URL.
        url: String,
        /// The message.
        #[arg(long)]
        payload: PathBuf,
        /// The sender only: the recipient key to send to (default: every recipient).
        #[arg(long)]
        to: Option<PublicKey>,
    },
    /// Receive new messages of a share.
    Recv {
        /// The invitation URL.
        url: String,
        /// Wait up to this long for a first message, e.g. 30s.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// Write each message to a file in this directory instead of stdout.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Show a mailbox's status.
    Status {
        /// The invitation URL.
        url: String,
    },
    /// Delete a mailbox.
    Delete {
        /// The invitation URL.
        url: String,
    },
    /// Give a recipient slot back.
    Relinquish {
        /// The invitation URL.
        url: String,
    },
    /// Settle a contested mailbox by keeping one or more claimants.
    Resolve {
        /// The invitation URL.
        url: String,
        /// A claimant's key to keep (repeatable); `tigress status` lists them.
        #[arg(long, required = true)]
        keep: Vec<PublicKey>,
    },
}

/// Parses `90`, `90s`, `15m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 15m, 24h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        "ms" => return Ok(Duration::from_millis(n)),
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use s, m, h or d)"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Io {
        context: format!("reading {}", path.display()),
        source: e,
    })
}

fn write_out(path: Option<&PathBuf>, bytes: &[u8]) -> Result<(), ClientError> {
    match path {
        Some(p) => std::fs::write(p, bytes).map_err(|e| ClientError::Io {
            context: format!("writing {}", p.display()),
            source: e,
        }),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(|e| ClientError::Io {
                    context: "writing stdout".into(),
                    source: e,
                })
        }
    }
}

fn bounded<const N: usize>(
    field: &str,
    v: Option<String>,
) -> Result<Option<BoundedString<N>>, ClientError> {
    v.map(|s| {
        BoundedString::new(s)
            .ok_or_else(|| ClientError::Usage(format!("--{field} is longer than {N} bytes")))
    })
    .transpose()
}

/// The most other nodes of a cluster file a client keeps as alternate entries.
const ALTERNATES: usize = 3;

/// Picks the node: `--node`, else a random node of `--cluster`, else the default; with
/// the alternates: other nodes of the cluster file (from the one after the pick on).
fn node_addr(cli: &Cli) -> Result<(Multiaddr, Vec<Multiaddr>), ClientError> {
    let mut listed: Vec<Multiaddr> = Vec::new();
    if let Some(file) = &cli.cluster {
        let text = std::fs::read_to_string(file).map_err(|e| ClientError::Io {
            context: format!("reading {}", file.display()),
            source: e,
        })?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?;
        let addrs: Vec<&str> = doc
            .get("nodes")
            .and_then(serde_json::Value::as_array)
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n["multiaddr"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for addr in addrs {
            listed.push(
                addr.parse()
                    .map_err(|e| ClientError::Usage(format!("{}: {addr}: {e}", file.display())))?,
            );
        }
        if listed.is_empty() {
            return Err(ClientError::Usage(format!("{}: no nodes", file.display())));
        }
    }
    let alternates_after = |pick: usize, listed: &[Multiaddr]| -> Vec<Multiaddr> {
        (1..listed.len())
            .map(|k| (pick + k) % listed.len())
            .filter_map(|k| listed.get(k).cloned())
            .take(ALTERNATES)
            .collect()
    };
    if let Some(node) = &cli.node {
        let addr: Multiaddr = node
            .parse()
            .map_err(|e| ClientError::Usage(format!("--node {node}: {e}")))?;
        let others: Vec<Multiaddr> = listed.into_iter().filter(|a| *a != addr).collect();
        let alternates = others.iter().take(ALTERNATES).cloned().collect();
        return Ok((addr, alternates));
    }
    if !listed.is_empty() {
        let mut pick = [0u8; 8];
        rand_core::Rng::fill_bytes(&mut rand_core::UnwrapErr(getrandom::SysRng), &mut pick);
        let i = usize::try_from(u64::from_le_bytes(pick) % listed.len() as u64).unwrap_or(0);
        if let Some(addr) = listed.get(i).cloned() {
            return Ok((addr, alternates_after(i, &listed)));
        }
    }
    DEFAULT_NODE
        .parse()
        .map(|a| (a, Vec::new()))
        .map_err(|e| ClientError::Usage(format!("{DEFAULT_NODE}: {e}")))
}

/// The scheme and host of a URL (everything before its path).
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url
        .get(after_scheme..)
        .and_then(|rest| rest.find('/'))
        .map_or(url.len(), |i| after_scheme + i);
    url.get(..end).unwrap_or(url)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the CLI; returns the process exit status.
pub async fn run(cli: Cli) -> u8 {
    let json = cli.json;
    match execute(cli).await {
        Ok(()) => 0,
        Err(e) => {
            if json {
                let doc =
                    serde_json::json!({"error": {"code": e.code_name(), "message": e.to_string()}});
                let _ = writeln!(std::io::stdout(), "{doc}");
            }
            let _ = writeln!(std::io::stderr(), "tigress: {e}");
            e.exit_code()
        }
    }
}

fn print_line(line: &str) -> Result<(), ClientError> {
    writeln!(std::io::stdout(), "{line}").map_err(|e| ClientError::Io {
        context: "writing stdout".into(),
        source: e,
    })
}

async fn execute(cli: Cli) -> Result<(), ClientError> {
    let state = StateDir::open(cli.state.clone().unwrap_or_else(StateDir::default_path))?;
    let (addr, alternates) = node_addr(&cli)?;
    let json = cli.json;
    let parse_url = |u: &str| ShareUrl::parse(u).map_err(ClientError::from);
    // Parse what can be parsed before connecting.
    if let Command::Accept { url, .. }
    | Command::Send { url, .. }
    | Command::Recv { url, .. }
    | Command::Status { url }
    | Command::Delete { url }
    | Command::Relinquish { url }
    | Command::Resolve { url, .. } = &cli.command
    {
        parse_url(url)?;
    }
    let client = if cli.direct {
        Client::connect_direct_from(&addr, state, cli.source).await?
    } else {
        Client::connect_from(&addr, state, cli.source).await?
    }
    .with_alternates(alternates);
    if client.is_alone() {
        let _ = writeln!(
            std::io::stderr(),
            "tigress: the node knows no other node, so requests go to it directly (a network of one has no one to hide from)"
        );
    }
    let named = cli.node.is_some() || cli.cluster.is_none();
    match cli.command {
        Command::Share {
            payload,
            ttl,
            max_recipients,
            vertical,
            rights,
            title,
            description,
            image_url,
            qr,
            base_url,
        } => {
            let bytes = read_file(&payload)?;
            let display = if title.is_some() || description.is_some() || image_url.is_some() {
                Some(DisplayInfo {
                    title: bounded("title", title)?,
                    description: bounded("description", description)?,
                    image_url: bounded("image-url", image_url)?,
                })
            } else {
                None
            };
            let options = ShareOptions {
                ttl_secs: ttl.as_secs(),
                policy: Policy {
                    max_recipients,
                    recipient_rights: rights,
                    ..Policy::default()
                },
                display,
                vertical,
                ..ShareOptions::default()
            };
            if base_url.is_none() && !named {
                return Err(ClientError::Usage(
                    "name the invitation's host with --base-url (or TIGRESS_BASE_URL), or name a node with --node: a node picked from --cluster does not choose where invitations open".into(),
                ));
            }
            let shared = client.share(&bytes, &options, base_url.as_deref()).await?;
            let url = shared.url.expose_url();
            let _ = writeln!(
                std::io::stderr(),
                "tigress: the invitation opens at {}",
                origin_of(&url)
            );
            if json {
                let doc = serde_json::json!({
                    "url": url.as_str(),
                    "share_id": shared.share_id.to_string(),
                    "expires_at": shared.expires_at,
                    "expires": rfc3339(shared.expires_at),
                });
                print_line(&doc.to_string())?;
            } else {
                print_line(&url)?;
            }
            if qr {
                let code = qrcode::QrCode::new(url.as_bytes())
                    .map_err(|e| ClientError::Usage(format!("QR code: {e}")))?;
                let art = code
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build();
                let _ = writeln!(std::io::stderr(), "{art}");
            }
        }
        Command::Accept { url, out } => {
            let url = parse_url(&url)?;
            let payload = client.accept(&url).await?;
            if json {
                let doc = serde_json::json!({
                    "share_id": url.mailbox_id().to_string(),
                    "bytes": payload.len(),
                    "out": out.as_ref().map(|p| p.display().to_string()),
                });
                if let Some(p) = &out {
                    write_out(Some(p), &payload)?;
                } else {
                    let doc = serde_json::json!({
                        "share_id": url.mailbox_id().to_string(),
                        "payload_hex": hex(&payload),
                    });
                    print_line(&doc.to_string())?;
                    return Ok(());
                }
                print_line(&doc.to_string())?;
            } else {
                write_out(out.as_ref(), &payload)?;
            }
        }
        Command::Send { url, payload, to } => {
            let url = parse_url(&url)?;
            let bytes = read_file(&payload)?;
            let sent = client.send(&url.mailbox_id(), &bytes, to).await?;
            if json {
                let list: Vec<_> = sent
                    .iter()
                    .map(|s| serde_json::json!({"to": s.to.to_string(), "seq": s.seq}))
                    .collect();
                print_line(&serde_json::json!({ "sent": list }).to_string())?;
            }
        }
        Command::Recv { url, wait, out_dir } => {
            let url = parse_url(&url)?;
            let received = client.recv(&url.mailbox_id(), wait).await?;
            if received.contested {
                let _ = writeln!(
                    std::io::stderr(),
                    "tigress: the mailbox is contested: keep a claimant with `tigress resolve` or delete it"
                );
            }
            if let Some(dir) = &out_dir {
                std::fs::create_dir_all(dir).map_err(|e| ClientError::Io {
                    context: format!("creating {}", dir.display()),
                    source: e,
                })?;
            }
            let mut list = Vec::new();
            for m in &received.messages {
                let file = out_dir
                    .as_ref()
                    .map(|d| d.join(format!("{}-{:04}", m.from.short(), m.seq)));
                if json {
                    if let Some(f) = &file {
                        write_out(Some(f), &m.plaintext)?;
                    }
                    list.push(serde_json::json!({
                        "from": m.from.to_string(),
                        "seq": m.seq,
                        "sent_at": m.sent_at,
                        "request_id": hex(&m.request_id),
                        "file": file.as_ref().map(|f| f.display().to_string()),
                        "payload_hex": if file.is_none() { Some(hex(&m.plaintext)) } else { None },
                    }));
                } else {
                    write_out(file.as_ref(), &m.plaintext)?;
                }
            }
            if json {
                print_line(
                    &serde_json::json!({"messages": list, "contested": received.contested})
                        .to_string(),
                )?;
            }
        }
        Command::Status { url } => {
            let url = parse_url(&url)?;
            let st = client.status(url.mailbox_id().address()).await?;
            // A party sees the recipients' keys and the message count; anyone else only
            // the public status. A sender whose view shows more recipients than allowed
            // gets that error (the liar is reported), not a quiet public status.
            let party = client.party_status(&url.mailbox_id()).await?;
            let recipients = party
                .as_ref()
                .map(|p| p.recipients.clone())
                .unwrap_or_default();
            let count = party
                .as_ref()
                .map_or(usize::from(st.recipients), |p| p.recipients.len());
            let messages = party.as_ref().map(|p| p.messages);
            // Only the sender's device can list claimants; others show none.
            let claimants = client
                .claimants(&url.mailbox_id())
                .await
                .unwrap_or_default();
            // Where the mailbox lives: its holders' peer IDs in the genesis's order.
            let replicas: Vec<String> = st
                .replicas
                .iter()
                .map(|k| {
                    libp2p::identity::ed25519::PublicKey::try_from_bytes(k.as_bytes())
                        .map(|ed| {
                            libp2p::identity::PublicKey::from(ed)
                                .to_peer_id()
                                .to_string()
                        })
                        .unwrap_or_else(|_| k.to_string())
                })
                .collect();
            if json {
                let doc = serde_json::json!({
                    "share_id": url.mailbox_id().to_string(),
                    "replicas": replicas,
                    "expires_at": st.expires_at,
                    "expires": rfc3339(st.expires_at),
                    "expired": st.expired,
                    "deleted": st.deleted,
                    "contested": st.contested,
                    "resolved": st.resolved,
                    "recipients": recipients.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "recipient_count": count,
                    "max_recipients": st.max_recipients,
                    "messages": messages,
                    "claimants": claimants.iter().map(ToString::to_string).collect::<Vec<_>>(),
                });
                print_line(&doc.to_string())?;
            } else {
                let state = if st.deleted {
                    "deleted"
                } else if st.expired {
                    "expired"
                } else if st.contested {
                    "contested"
                } else if count == 0 {
                    "waiting for a claim"
                } else {
                    "claimed"
                };
                print_line(&format!("share {}", url.mailbox_id()))?;
                print_line(&format!("state: {state}"))?;
                print_line(&format!("expires: {}", rfc3339(st.expires_at)))?;
                print_line(&format!("recipients: {count}/{}", st.max_recipients))?;
                for r in &recipients {
                    print_line(&format!("  certified {r}"))?;
                }
                for c in claimants.iter().filter(|c| !recipients.contains(c)) {
                    print_line(&format!("  claimant {c}"))?;
                }
                if let Some(n) = messages {
                    print_line(&format!("messages: {n}"))?;
                }
                print_line(&format!("replicas: {}", replicas.join(" ")))?;
            }
        }
        Command::Delete { url } => {
            let url = parse_url(&url)?;
            client.delete(&url.mailbox_id()).await?;
            if json {
                print_line(
                    &serde_json::json!({"deleted": url.mailbox_id().to_string()}).to_string(),
                )?;
            }
        }
        Command::Relinquish { url } => {
            let url = parse_url(&url)?;
            client.relinquish(&url.mailbox_id()).await?;
            if json {
                print_line(
                    &serde_json::json!({"relinquished": url.mailbox_id().to_string()}).to_string(),
                )?;
            }
        }
        Command::Resolve { url, keep } => {
            let url = parse_url(&url)?;
            client.resolve(&url.mailbox_id(), &keep).await?;
            if json {
                let kept: Vec<String> = keep.iter().map(ToString::to_string).collect();
                print_line(
                    &serde_json::json!({"resolved": url.mailbox_id().to_string(), "kept": kept})
                        .to_string(),
                )?;
            }
        }
    }
    Ok(())
}

/// Unix seconds as an RFC 3339 UTC time.
fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn global_options_anywhere() {
        let cli = Cli::try_parse_from([
            "tigress",
            "status",
            "https://h/v1/m/x#y",
            "--json",
            "--node",
            "/ip4/1.2.3.4/tcp/1",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.node.as_deref(), Some("/ip4/1.2.3.4/tcp/1"));
        assert!(!cli.direct);
    }

    #[test]
    fn the_origin_of_an_invitation() {
        assert_eq!(
            origin_of("https://relay.example.org/v1/m/abc?v=a#s"),
            "https://relay.example.org"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/v1/m/x"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(origin_of("https://h"), "https://h");
    }
}
