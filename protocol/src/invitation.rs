//! The invitation: the draft's Share URL, `https://{host}/v1/m/{uuid}?v={a|h|c}#{secret}`.
//!
//! The secret travels only in the fragment. [`ShareUrl::parse`] hands it back as a
//! [`Secret`]; [`ShareUrl::public_url`] is the form without it, the only one that may be
//! sent to a node or logged.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::id::{MailboxId, Secret};

/// The credential vertical of the draft's `v` query parameter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Vertical {
    /// General access (`a`, or no parameter).
    #[default]
    General,
    /// Home key (`h`).
    Home,
    /// Car key (`c`).
    Car,
}

impl Vertical {
    /// The query value: `a`, `h` or `c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Vertical::General => "a",
            Vertical::Home => "h",
            Vertical::Car => "c",
        }
    }
}

impl std::str::FromStr for Vertical {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        match s {
            "a" => Ok(Vertical::General),
            "h" => Ok(Vertical::Home),
            "c" => Ok(Vertical::Car),
            _ => Err(UrlError::Vertical),
        }
    }
}

/// Why a Share URL did not parse. Each malformed form has its own variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The scheme is not `https` (or `http`, for local relays).
    #[error("share URL must start with https:// (or http://)")]
    Scheme,
    /// The host is empty or contains characters a host cannot.
    #[error("share URL has no valid host")]
    Host,
    /// The path is not `/v{N}/m/{id}`.
    #[error("share URL path must be /v1/m/{{mailbox-id}}")]
    Path,
    /// The API version in the path is not `v1`.
    #[error("share URL names an unsupported API version (expected v1)")]
    Version,
    /// The mailbox ID is not a UUID.
    #[error("share URL mailbox ID is not a UUID")]
    MailboxId,
    /// The `v` parameter is not `a`, `h` or `c`.
    #[error("share URL vertical must be a, h or c")]
    Vertical,
    /// No fragment: the secret is missing.
    #[error("share URL has no secret (the part after #)")]
    MissingSecret,
    /// The fragment is not base64url.
    #[error("share URL secret is not base64url")]
    SecretEncoding,
    /// The fragment decodes to the wrong number of bytes.
    #[error("share URL secret must be 32 bytes")]
    SecretLength,
}

/// A parsed invitation.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareUrl {
    base: String,
    id: MailboxId,
    vertical: Vertical,
    secret: Secret,
}

impl fmt::Debug for ShareUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareUrl({}#<redacted>)", self.public_url())
    }
}

fn split_base(url: &str) -> Result<(&str, &str), UrlError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(UrlError::Scheme)?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]%".contains(c));
    if !host_ok {
        return Err(UrlError::Host);
    }
    let scheme_len = url.len() - rest.len();
    Ok((url.get(..scheme_len + host_end).unwrap_or(url), tail))
}

impl ShareUrl {
    /// An invitation on the relay at `base` (`https://host[:port]`, a trailing `/` allowed).
    pub fn new(
        base: &str,
        id: MailboxId,
        vertical: Vertical,
        secret: Secret,
    ) -> Result<Self, UrlError> {
        let (base, tail) = split_base(base.trim_end_matches('/'))?;
        if !tail.is_empty() {
            return Err(UrlError::Host);
        }
        Ok(Self {
            base: base.to_owned(),
            id,
            vertical,
            secret,
        })
    }

    /// Parses a Share URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let (base, tail) = split_base(url)?;
        let (before_fragment, fragment) = match tail.split_once('#') {
            Some((a, b)) => (a, Some(b)),
            None => (tail, None),
        };
        let (path, query) = match before_fragment.split_once('?') {
            Some((a, b)) => (a, Some(b)),
            None => (before_fragment, None),
        };
        let mut segments = path.strip_prefix('/').ok_or(UrlError::Path)?.split('/');
        let version = segments.next().ok_or(UrlError::Path)?;
        if !version.starts_with('v') {
            return Err(UrlError::Path);
        }
        if version != "v1" {
            return Err(UrlError::Version);
        }
        if segments.next() != Some("m") {
            return Err(UrlError::Path);
        }
        let id_text = segments.next().ok_or(UrlError::Path)?;
        if segments.next().is_some() {
            return Err(UrlError::Path);
        }
        let id: MailboxId = id_text.parse().map_err(|_| UrlError::MailboxId)?;
        let mut vertical = Vertical::General;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if let Some(v) = pair.strip_prefix("v=") {
                vertical = v.parse()?;
            }
        }
        let fragment = fragment
            .filter(|f| !f.is_empty())
            .ok_or(UrlError::MissingSecret)?;
        let bytes = zeroize::Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(fragment.trim_end_matches('='))
                .map_err(|_| UrlError::SecretEncoding)?,
        );
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| UrlError::SecretLength)?;
        Ok(Self {
            base: base.to_owned(),
            id,
            vertical,
            secret: Secret::from_bytes(secret),
        })
    }

    /// The mailbox ID.
    pub fn mailbox_id(&self) -> MailboxId {
        self.id
    }

    /// The vertical.
    pub fn vertical(&self) -> Vertical {
        self.vertical
    }

    /// The secret from the fragment.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The relay base (`https://host[:port]`), a hint of where to reach the mailbox.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL without the fragment: safe to send to a node or to log.
    pub fn public_url(&self) -> String {
        format!(
            "{}/v1/m/{}?v={}",
            self.base,
            self.id,
            self.vertical.as_str()
        )
    }

    /// The whole invitation, secret included. Only for handing to the recipient.
    pub fn expose_url(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!(
            "{}#{}",
            self.public_url(),
            URL_SAFE_NO_PAD.encode(self.secret.expose())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2bba630e-519b-11ec-bf63-0242ac130002";
    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    fn url(s: &str) -> Result<ShareUrl, UrlError> {
        ShareUrl::parse(s)
    }

    #[test]
    fn parses_and_formats() {
        let u = url(&format!("https://relay.example.com/v1/m/{ID}?v=c#{SECRET}")).unwrap();
        assert_eq!(u.mailbox_id().to_string(), ID);
        assert_eq!(u.vertical(), Vertical::Car);
        assert_eq!(u.secret().expose()[31], 31);
        assert_eq!(u.base(), "https://relay.example.com");
        let again = url(&u.expose_url()).unwrap();
        assert_eq!(again, u);
        assert!(!u.public_url().contains('#'));
        assert!(!format!("{u:?}").contains(SECRET));
    }

    #[test]
    fn defaults_and_local_relays() {
        let u = url(&format!("http://127.0.0.1:8080/v1/m/{ID}#{SECRET}")).unwrap();
        assert_eq!(u.vertical(), Vertical::General);
        assert_eq!(u.base(), "http://127.0.0.1:8080");
        let padded = format!("https://h/v1/m/{ID}?v=h#{SECRET}=");
        assert_eq!(url(&padded).unwrap().vertical(), Vertical::Home);
    }

    #[test]
    fn each_malformed_form_has_its_error() {
        let cases = [
            (format!("ftp://h/v1/m/{ID}#{SECRET}"), UrlError::Scheme),
            (format!("https:///v1/m/{ID}#{SECRET}"), UrlError::Host),
            (format!("https://h o/v1/m/{ID}#{SECRET}"), UrlError::Host),
            (format!("https://h/v1/x/{ID}#{SECRET}"), UrlError::Path),
            (
                format!("https://h/v1/m/{ID}/extra#{SECRET}"),
                UrlError::Path,
            ),
            (format!("https://h/v2/m/{ID}#{SECRET}"), UrlError::Version),
            (
                format!("https://h/v1/m/not-a-uuid#{SECRET}"),
                UrlError::MailboxId,
            ),
            (
                format!("https://h/v1/m/{ID}?v=z#{SECRET}"),
                UrlError::Vertical,
            ),
            (format!("https://h/v1/m/{ID}?v=c"), UrlError::MissingSecret),
            (format!("https://h/v1/m/{ID}?v=c#"), UrlError::MissingSecret),
            (
                format!("https://h/v1/m/{ID}#not*base64"),
                UrlError::SecretEncoding,
            ),
            (
                format!("https://h/v1/m/{ID}#hXlr6aRC7KgJpOLTNZaLsw=="),
                UrlError::SecretLength,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(url(&input), Err(want), "{input}");
        }
    }
}
