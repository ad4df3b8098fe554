//! Node configuration: the TOML file (`--config`, every field documented in
//! `node/config.example.toml`) with defaults for everything; flags override it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A relay: routes, stores mailboxes, serves clients (the default).
    #[default]
    Relay,
    /// A bootstrap node: only routes; stores nothing and is never a replica.
    Bootstrap,
}

/// Whether other nodes can dial this one, and so whether it may serve in routing tables
/// and hold mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// AutoNAT decides: the node starts private and turns public once another node has
    /// dialed one of its addresses back (the default).
    #[default]
    Auto,
    /// The operator vouches that the listen addresses are reachable: the node serves at once.
    Public,
    /// Behind NAT or a firewall: the node is only a client of the network (Kademlia client
    /// mode); it is never in a routing table and never a replica of another node's
    /// mailbox.
    Private,
}

impl Reachability {
    /// The setting's name, as in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// The node's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the identity and the database live (default: the platform data directory,
    /// e.g. `~/.local/share/tigress-node`).
    pub data_dir: Option<PathBuf>,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// The public HTTP address: `/health` and the gateway; `None` disables HTTP.
    pub http: Option<SocketAddr>,
    /// The admin listener (`/metrics`, `/status`): an address (taken: an error), `"off"`,
    /// or unset for [`DEFAULT_ADMIN`] (taken, as by a second node on the host: a free
    /// port instead).
    pub admin: Option<String>,
    /// The base of share URLs made through this node (default: `http://` + the HTTP
    /// address, or `https://` with TLS).
    pub public_url: Option<String>,
    /// A PEM certificate chain for HTTPS on the public port (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The node's domain name: HTTPS with certificates from an ACME CA (TLS-ALPN-01 on
    /// the public port, which must be reachable as this name on port 443).
    pub acme_domain: Option<String>,
    /// The contact e-mail address given to the ACME CA.
    pub acme_contact: Option<String>,
    /// The ACME CA's directory URL (default: Let's Encrypt).
    pub acme_directory: Option<String>,
    /// Extra root certificates (PEM) trusted for the ACME CA's own HTTPS (a private CA).
    pub acme_root: Option<PathBuf>,
    /// Seed nodes to join the network through (multiaddrs with `/p2p/<id>`).
    pub bootstrap: Vec<String>,
    /// A file with one seed multiaddr per line (`#` starts a comment).
    pub seeds_file: Option<PathBuf>,
    /// Relay or bootstrap.
    pub role: NodeRole,
    /// `auto` (AutoNAT decides), `public` or `private`.
    pub reachability: Reachability,
    /// How many replicas a new mailbox gets (the network's replication factor).
    pub replication: u8,
    /// How many standbys a new mailbox gets after its replicas (at most 8): the nodes that
    /// take the place of replicas that leave for good.
    pub standbys: u8,
    /// The longest mailbox lifetime accepted, in seconds.
    pub max_ttl_secs: u64,
    /// The most bytes this node stores.
    pub quota_bytes: u64,
    /// Seconds between sweeps of expired mailboxes.
    pub sweep_interval_secs: u64,
    /// Milliseconds an entry node waits for a replica's answer.
    pub replica_timeout_ms: u64,
    /// The most client and replica requests handled at once; more are refused (429).
    pub max_inflight_requests: usize,
    /// Client requests a peer may make per second on average (a token bucket per peer);
    /// beyond it requests are refused (429).
    pub peer_requests_per_sec: u32,
    /// The burst a peer may make at once.
    pub peer_request_burst: u32,
    /// The most established connections.
    pub max_connections: u32,
    /// Seconds an idle connection stays open (long enough for long-polls).
    pub idle_timeout_secs: u64,
    /// Seconds between Kademlia bootstrap/refresh rounds.
    pub bootstrap_interval_secs: u64,
    /// Seconds between anti-entropy rounds.
    pub anti_entropy_interval_secs: u64,
    /// Seconds a mailbox's holder must stay unreachable before the others hand its place
    /// to the next standby (a takeover).
    pub takeover_after_secs: u64,
    /// The most routing-table entries from one network prefix (IPv4 /24, IPv6 /48) in
    /// all (0: no limit; local clusters, whose nodes share 127.0.0.1, use 0).
    pub max_peers_per_prefix: usize,
    /// The most routing-table entries from one prefix in one Kademlia bucket (0: none).
    pub max_peers_per_prefix_per_bucket: usize,
    /// The HTTP gateway's secret (64 hex digits), shared by an operator's nodes so any of
    /// them serves the same draft devices; default: `gateway.key` in the data directory.
    pub gateway_secret: Option<String>,
    /// What one source (a network prefix, a host within it) may hold and ask of this
    /// node: the `[budgets]` table.
    pub budgets: crate::budget::BudgetConfig,
}

/// The default libp2p listen address.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";
/// The default HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

/// Where the admin listener goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// [`DEFAULT_ADMIN`], else a free loopback port.
    Default,
    /// This address, or an error when it is taken.
    At(SocketAddr),
    /// No admin listener.
    Off,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: None,
            listen: vec![DEFAULT_LISTEN.to_owned()],
            http: DEFAULT_HTTP.parse().ok(),
            admin: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            acme_domain: None,
            acme_contact: None,
            acme_directory: None,
            acme_root: None,
            bootstrap: Vec::new(),
            seeds_file: None,
            role: NodeRole::Relay,
            reachability: Reachability::Auto,
            replication: 5,
            standbys: 3,
            max_ttl_secs: 7 * 24 * 3600,
            quota_bytes: 1 << 30,
            sweep_interval_secs: 60,
            replica_timeout_ms: 5_000,
            max_inflight_requests: 256,
            peer_requests_per_sec: 500,
            peer_request_burst: 1000,
            max_connections: 1024,
            idle_timeout_secs: 300,
            bootstrap_interval_secs: 300,
            anti_entropy_interval_secs: 30,
            takeover_after_secs: 6 * 3600,
            max_peers_per_prefix: 8,
            max_peers_per_prefix_per_bucket: 2,
            gateway_secret: None,
            budgets: crate::budget::BudgetConfig::default(),
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; unknown fields are refused.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Where the admin listener goes.
    pub fn admin(&self) -> Result<Admin, ConfigError> {
        match self.admin.as_deref() {
            None => Ok(Admin::Default),
            Some("off") => Ok(Admin::Off),
            Some(a) => a.parse().map(Admin::At).map_err(|_| {
                ConfigError::Invalid(format!(
                    "admin must be an address such as 127.0.0.1:9090, or \"off\"; got {a:?}"
                ))
            }),
        }
    }

    /// How the public port speaks TLS, if it does (`cache` is where ACME keeps its
    /// certificates).
    pub fn tls(&self, cache: PathBuf) -> Result<Option<crate::tls::Tls>, ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        match (
            &self.tls_cert,
            &self.tls_key,
            &self.acme_domain,
            &self.acme_contact,
        ) {
            (None, None, None, None) => Ok(None),
            (Some(_), Some(_), Some(_), _) => {
                invalid("tls_cert/tls_key and acme_domain are exclusive: use one")
            }
            (Some(cert), Some(key), None, _) => Ok(Some(crate::tls::Tls::Files {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (Some(_), None, _, _) | (None, Some(_), _, _) => {
                invalid("tls_cert and tls_key go together")
            }
            (None, None, Some(domain), Some(contact)) => Ok(Some(crate::tls::Tls::Acme {
                domain: domain.clone(),
                contact: contact.clone(),
                directory: self
                    .acme_directory
                    .clone()
                    .unwrap_or_else(|| crate::tls::LETS_ENCRYPT.to_owned()),
                root: self.acme_root.clone(),
                cache,
            })),
            (None, None, Some(_), None) => invalid("acme_domain needs acme_contact"),
            (None, None, None, Some(_)) => invalid("acme_contact needs acme_domain"),
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.admin()?;
        if self.tls(PathBuf::new())?.is_some() && self.http.is_none() {
            return Err(ConfigError::Invalid(
                "TLS is for the public HTTP port: it needs http".into(),
            ));
        }
        if !(1..=16).contains(&self.replication) {
            return Err(ConfigError::Invalid("replication must be 1 to 16".into()));
        }
        if self.standbys > 8 {
            return Err(ConfigError::Invalid("standbys must be 0 to 8".into()));
        }
        if self.max_ttl_secs == 0 || self.sweep_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "max_ttl_secs and sweep_interval_secs must be positive".into(),
            ));
        }
        if self.max_inflight_requests == 0 {
            return Err(ConfigError::Invalid(
                "max_inflight_requests must be positive".into(),
            ));
        }
        self.budgets.check().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The data directory, defaulted.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("tigress-node")
        })
    }

    /// Every seed: `bootstrap` plus the lines of `seeds_file`.
    pub fn seeds(&self) -> Result<Vec<String>, ConfigError> {
        let mut seeds = self.bootstrap.clone();
        if let Some(path) = &self.seeds_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            seeds.extend(parse_seeds(&text));
        }
        Ok(seeds)
    }
}

/// The seed lines of a seeds file: one multiaddr per line, `#` comments, blanks ignored.
pub fn parse_seeds(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_matches_the_defaults_it_documents() {
        let text = include_str!("../config.example.toml");
        let parsed = Config::from_toml(text).unwrap();
        let expected = Config {
            data_dir: Some(PathBuf::from("/var/lib/tigress-node")),
            public_url: Some("https://relay.example.org".into()),
            ..Config::default()
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn unknown_fields_and_bad_ranges_are_refused() {
        assert!(matches!(
            Config::from_toml("listn = []"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml("replication = 0"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_toml("admin = \"localhost\""),
            Err(ConfigError::Invalid(_))
        ));
        assert_eq!(
            Config::from_toml("admin = \"off\"")
                .unwrap()
                .admin()
                .unwrap(),
            Admin::Off
        );
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        // Budgets: a table of their own, checked.
        let c =
            Config::from_toml("[budgets]\nexempt = [\"10.0.0.0/8\"]\nprefix_v4 = 16\n").unwrap();
        assert_eq!(c.budgets.exempt, vec!["10.0.0.0/8".to_owned()]);
        assert_eq!(c.budgets.prefix_v4, 16);
        for bad in [
            "[budgets]\nexempt = [\"10.0.0.0/40\"]",
            "[budgets]\nprefix_v6 = 0",
            "[budgets]\nhttp_header_timeout_secs = 0",
        ] {
            assert!(
                matches!(Config::from_toml(bad), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Config::from_toml("[budgets]\nrequests = 1"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn seeds_files_skip_comments_and_blanks() {
        let seeds = parse_seeds("# seeds\n/ip4/1.2.3.4/tcp/1/p2p/x  # first\n\n  /dns/a/tcp/2\n");
        assert_eq!(seeds, vec!["/ip4/1.2.3.4/tcp/1/p2p/x", "/dns/a/tcp/2"]);
    }
}
