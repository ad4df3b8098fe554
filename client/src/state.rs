//! Per-share state kept on the device: the session (keys, sequence numbers, held
//! messages) and the outbox of sealed messages not yet acknowledged. One file per share,
//! mode 0600, replaced atomically (write a temporary file, sync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tigress_protocol::MailboxId;
use tigress_protocol::record::Message;
use tigress_protocol::session::{RecipientSession, SenderSession};
use tigress_protocol::wire;

use crate::error::ClientError;

/// Which side of a share this device is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Party {
    /// The sender.
    Sender(SenderSession),
    /// A recipient.
    Recipient(RecipientSession),
}

/// Everything the device keeps for one share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareState {
    /// The session.
    pub party: Party,
    /// Messages sealed (sequence numbers spent) but not yet stored by the network; sent
    /// again, byte for byte, before anything new.
    pub outbox: Vec<Message>,
}

impl ShareState {
    /// The mailbox ID.
    pub fn mailbox_id(&self) -> MailboxId {
        match &self.party {
            Party::Sender(s) => s.mailbox_id(),
            Party::Recipient(r) => r.mailbox_id(),
        }
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir`, created (mode 0700) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("shares"))
            .map_err(|e| ClientError::io(format!("creating {}", dir.display()), e))?;
        set_mode(&dir, 0o700)?;
        Ok(Self { dir })
    }

    /// The platform default: `$XDG_DATA_HOME/tigress` (e.g. `~/.local/share/tigress`).
    pub fn default_path() -> PathBuf {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tigress")
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The network directory last fetched from the node at `home`, if it was fetched less
    /// than `max_age_secs` before `now`.
    pub fn load_directory(
        &self,
        home: &str,
        now: u64,
        max_age_secs: u64,
    ) -> Option<crate::oblivious::Directory> {
        let bytes = std::fs::read(self.dir.join("directory")).ok()?;
        let cached: CachedDirectory = wire::decode_local(&bytes).ok()?;
        (cached.home == home && now.saturating_sub(cached.fetched_at) < max_age_secs)
            .then_some(cached.directory)
    }

    /// Keeps the network directory fetched from the node at `home` (replacing the last).
    pub fn save_directory(
        &self,
        home: &str,
        now: u64,
        directory: &crate::oblivious::Directory,
    ) -> Result<(), ClientError> {
        let cached = CachedDirectory {
            home: home.to_owned(),
            fetched_at: now,
            directory: directory.clone(),
        };
        let bytes = wire::encode_local(&cached).map_err(|e| {
            ClientError::io(
                "encoding the directory",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let path = self.dir.join("directory");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| ClientError::io(format!("writing {}", path.display()), e))
    }

    fn file(&self, id: &MailboxId) -> PathBuf {
        self.dir.join("shares").join(id.to_string())
    }

    /// Whether state exists for the share.
    pub fn contains(&self, id: &MailboxId) -> bool {
        self.file(id).exists()
    }

    /// Loads the state of a share.
    pub fn load(&self, id: &MailboxId) -> Result<ShareState, ClientError> {
        let path = self.file(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::UnknownShare(id.to_string()));
            }
            Err(e) => return Err(ClientError::io(format!("reading {}", path.display()), e)),
        };
        wire::decode_local(&bytes).map_err(|e| {
            ClientError::io(
                format!("reading {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Saves the state of a share atomically.
    pub fn save(&self, state: &ShareState) -> Result<(), ClientError> {
        let path = self.file(&state.mailbox_id());
        let bytes = wire::encode_local(state).map_err(|e| {
            ClientError::io(
                "encoding share state",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let tmp = path.with_extension("tmp");
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&tmp)
                .map_err(|e| ClientError::io(ctx("creating"), e))?;
            f.write_all(&bytes)
                .map_err(|e| ClientError::io(ctx("writing"), e))?;
            f.sync_all()
                .map_err(|e| ClientError::io(ctx("syncing"), e))?;
        }
        set_mode(&tmp, 0o600)?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| ClientError::io(format!("replacing {}", path.display()), e))?;
        Ok(())
    }
}

/// The directory as kept on disk.
#[derive(Serialize, Deserialize)]
struct CachedDirectory {
    home: String,
    fetched_at: u64,
    directory: crate::oblivious::Directory,
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClientError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ClientError::io(format!("setting mode of {}", path.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
