//! The canonical encoding: bincode 2 with one fixed configuration, bounded decoding.
//!
//! Every record and every wire message is encoded with [`encode`] and decoded with
//! [`decode`], which checks the input size before it looks at the bytes, gives bincode a
//! byte limit so that no length prefix can make it allocate beyond the input, refuses
//! trailing bytes, and checks every bounded field ([`BoundedBytes`], [`BoundedVec`],
//! [`BoundedString`]) against its own limit.

use std::fmt;
use std::ops::Deref;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format version that opens every record.
pub const FORMAT_VERSION: u8 = 2;

/// The largest encoded record or wire message accepted (96 KiB: a 64 KiB padded payload
/// with its keys, signatures and headers fits with room to spare).
pub const MAX_ENCODED: usize = 96 * 1024;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes than the limit for this type.
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ended early.
    #[error("input truncated")]
    Truncated,
    /// Bytes left over after a complete value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// A format version this implementation does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Some other malformation (bad enum tag, invalid UTF-8, field over its bound...).
    #[error("invalid encoding: {0}")]
    Invalid(String),
}

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_ENCODED>,
>;

const CONFIG: Config = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_ENCODED>();

/// The canonical bytes of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding an in-memory value of this crate's serde-derived types cannot fail: every
    // type is supported and every bounded field bounds the total far below the limit.
    #[allow(clippy::expect_used)]
    bincode::serde::encode_to_vec(value, FRAME_CONFIG)
        .expect("canonical encoding of an owned value")
}

/// Decodes exactly one `T` from `bytes`, with every bound checked.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    let max = max.min(MAX_ENCODED);
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, CONFIG).map_err(|e| match e {
            bincode::error::DecodeError::UnexpectedEnd { .. } => DecodeError::Truncated,
            bincode::error::DecodeError::LimitExceeded => DecodeError::Truncated,
            other => DecodeError::Invalid(other.to_string()),
        })?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// The largest protocol frame (see `rpc::MAX_FRAME`).
const FRAME_LIMIT: usize = 1024 * 1024;

const FRAME_CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<FRAME_LIMIT>,
> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<FRAME_LIMIT>();

/// Encodes a protocol frame body, refusing one over 1 MiB.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DecodeError> {
    bincode::serde::encode_to_vec(value, FRAME_CONFIG).map_err(|_| DecodeError::TooLarge {
        len: FRAME_LIMIT + 1,
        max: FRAME_LIMIT,
    })
}

/// Decodes exactly one `T` of at most `max` (≤ 1 MiB) bytes: for protocol frames, which
/// carry several records.
pub fn decode_with_limit<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    let max = max.min(FRAME_LIMIT);
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, FRAME_CONFIG).map_err(|e| match e {
            bincode::error::DecodeError::UnexpectedEnd { .. }
            | bincode::error::DecodeError::LimitExceeded => DecodeError::Truncated,
            other => DecodeError::Invalid(other.to_string()),
        })?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// The largest local state blob (a client's session, with held messages).
pub const MAX_LOCAL: usize = 16 * 1024 * 1024;

const LOCAL_CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_LOCAL>,
> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_LOCAL>();

/// Encodes local state (not a wire format) with the canonical configuration.
pub fn encode_local<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DecodeError> {
    bincode::serde::encode_to_vec(value, LOCAL_CONFIG)
        .map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// Decodes local state of at most [`MAX_LOCAL`] bytes.
pub fn decode_local<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_LOCAL {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_LOCAL,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, LOCAL_CONFIG)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes a versioned value: the first byte must be [`FORMAT_VERSION`].
pub fn decode_versioned<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::Truncated),
        Some(&FORMAT_VERSION) => decode(bytes, max),
        Some(&other) => Err(DecodeError::UnsupportedVersion(other)),
    }
}

/// Serde for secret byte strings: serialized as bytes, held in a zeroizing buffer.
pub(crate) mod zeroizing_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(crate) fn serialize<S: Serializer>(
        v: &Zeroizing<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        Ok(Zeroizing::new(
            serde_bytes::ByteBuf::deserialize(d)?.into_vec(),
        ))
    }
}

macro_rules! bounded_error {
    ($len:expr, $max:expr) => {
        serde::de::Error::custom(format!("length {} over the bound of {}", $len, $max))
    };
}

/// A byte string of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// Wraps `bytes` if it is within the bound.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() <= MAX).then_some(Self(bytes))
    }

    /// Wraps bytes known to be within the bound (debug-asserted).
    pub(crate) fn from_vec_unchecked(bytes: Vec<u8>) -> Self {
        debug_assert!(bytes.len() <= MAX);
        Self(bytes)
    }

    /// The bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedBytes<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = serde_bytes::ByteBuf::deserialize(d)?;
        let bytes = bytes.into_vec();
        if bytes.len() > MAX {
            return Err(bounded_error!(bytes.len(), MAX));
        }
        Ok(Self(bytes))
    }
}

/// A UTF-8 string of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// Wraps `s` if it is within the bound.
    pub fn new(s: impl Into<String>) -> Option<Self> {
        let s = s.into();
        (s.len() <= MAX).then_some(Self(s))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Serialize for BoundedString<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedString<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() > MAX {
            return Err(bounded_error!(s.len(), MAX));
        }
        Ok(Self(s))
    }
}

/// A list of at most `MAX` items.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// Wraps `items` if within the bound.
    pub fn new(items: Vec<T>) -> Option<Self> {
        (items.len() <= MAX).then_some(Self(items))
    }

    /// The first `MAX` of `items`.
    pub fn truncated(mut items: Vec<T>) -> Self {
        items.truncate(MAX);
        Self(items)
    }

    /// The items.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const MAX: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> serde::de::Visitor<'de> for V<T, MAX> {
            type Value = BoundedVec<T, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {MAX} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                if let Some(n) = seq.size_hint()
                    && n > MAX
                {
                    return Err(bounded_error!(n, MAX));
                }
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if out.len() == MAX {
                        return Err(bounded_error!(MAX + 1, MAX));
                    }
                    out.push(item);
                }
                Ok(BoundedVec(out))
            }
        }
        d.deserialize_seq(V::<T, MAX>(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        version: u8,
        items: BoundedVec<u32, 3>,
        blob: BoundedBytes<4>,
        name: BoundedString<5>,
    }

    fn sample() -> Sample {
        Sample {
            version: FORMAT_VERSION,
            items: BoundedVec::new(vec![1, 2]).unwrap(),
            blob: BoundedBytes::new(vec![9, 9]).unwrap(),
            name: BoundedString::new("abc").unwrap(),
        }
    }

    #[test]
    fn round_trip_and_bounds() {
        let bytes = encode(&sample());
        assert_eq!(decode_versioned::<Sample>(&bytes, 100).unwrap(), sample());
        assert!(matches!(
            decode::<Sample>(&bytes, 3),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode::<Sample>(&long, 100),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            decode::<Sample>(&bytes[..bytes.len() - 1], 100),
            Err(DecodeError::Truncated)
        );
        // Format 1 (before signed acknowledgements and claim quorums) and any later
        // format are refused.
        for other in [1, FORMAT_VERSION + 1] {
            let mut v = bytes.clone();
            v[0] = other;
            assert_eq!(
                decode_versioned::<Sample>(&v, 100),
                Err(DecodeError::UnsupportedVersion(other))
            );
        }
    }

    #[test]
    fn over_bound_fields_are_refused() {
        #[derive(Serialize)]
        struct Raw {
            version: u8,
            items: Vec<u32>,
            blob: serde_bytes::ByteBuf,
            name: String,
        }
        let too_many = encode(&Raw {
            version: 1,
            items: vec![1, 2, 3, 4],
            blob: serde_bytes::ByteBuf::from(vec![]),
            name: String::new(),
        });
        assert!(matches!(
            decode::<Sample>(&too_many, 100),
            Err(DecodeError::Invalid(_))
        ));
        let blob = encode(&Raw {
            version: 1,
            items: vec![],
            blob: serde_bytes::ByteBuf::from(vec![0; 5]),
            name: String::new(),
        });
        assert!(matches!(
            decode::<Sample>(&blob, 100),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // version, then a u64 length of 2^60 items.
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<Sample>(&bytes, 100).is_err());
    }
}
