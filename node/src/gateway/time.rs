//! RFC 3339 times of the draft (`mailboxConfiguration.expiration`), in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses an RFC 3339 UTC time (`2022-02-08T14:57:22Z`, fractions allowed) into unix
/// seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Formats unix seconds as `YYYY-MM-DDThh:mm:ssZ`.
pub(crate) fn format_rfc3339(t: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for t in [
            0u64,
            951_782_400,
            1_644_332_242,
            1_800_000_000,
            4_102_444_800,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2022-02-08T14:57:22Z"), Some(1_644_332_242));
        assert_eq!(format_rfc3339(1_644_332_242), "2022-02-08T14:57:22Z");
        for bad in [
            "2022-02-08 14:57:22Z",
            "2022-13-08T14:57:22Z",
            "2022-02-08T14:57:22",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
