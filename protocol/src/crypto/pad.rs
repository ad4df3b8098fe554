//! Padding to size buckets, so a node sees a bucket and not a length.

use crate::Error;

/// The padded sizes: a padded plaintext is always exactly one of these.
pub const BUCKETS: [usize; 5] = [256, 1024, 4096, 16384, 65536];

/// The longest plaintext that pads (the largest bucket minus the 0x80 marker).
pub const MAX_PLAINTEXT: usize = 65536 - 1;

/// The bucket a plaintext of `len` bytes pads to, if any.
pub fn padded_len(len: usize) -> Option<usize> {
    BUCKETS.into_iter().find(|&b| b > len)
}

/// `plaintext || 0x80 || zeros`, up to the smallest bucket that holds `len + 1` bytes.
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    let total = padded_len(plaintext.len()).ok_or(Error::PayloadTooLarge {
        len: plaintext.len(),
        max: MAX_PLAINTEXT,
    })?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(total, 0);
    Ok(out)
}

/// Removes the padding; refuses anything that is not a bucket size with a proper marker.
pub fn unpad(mut padded: Vec<u8>) -> Result<Vec<u8>, Error> {
    if !BUCKETS.contains(&padded.len()) {
        return Err(Error::Decrypt);
    }
    let marker = padded.iter().rposition(|&b| b != 0).ok_or(Error::Decrypt)?;
    if padded.get(marker) != Some(&0x80) {
        return Err(Error::Decrypt);
    }
    padded.truncate(marker);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_edges() {
        assert_eq!(padded_len(0), Some(256));
        assert_eq!(padded_len(255), Some(256));
        assert_eq!(padded_len(256), Some(1024));
        assert_eq!(padded_len(65535), Some(65536));
        assert_eq!(padded_len(65536), None);
        assert!(matches!(
            pad(&[0; 65536]),
            Err(Error::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn round_trip_including_trailing_zero_bytes() {
        for len in [0usize, 1, 254, 255, 256, 1023, 5000] {
            let data: Vec<u8> = (0..len)
                .map(|i| if i % 3 == 0 { 0 } else { i as u8 })
                .collect();
            let mut with_zero_tail = data.clone();
            with_zero_tail.extend_from_slice(&[0, 0]);
            for plain in [data.clone(), with_zero_tail] {
                let padded = pad(&plain).unwrap();
                assert!(BUCKETS.contains(&padded.len()));
                assert_eq!(unpad(padded).unwrap(), plain);
            }
        }
    }

    #[test]
    fn bad_padding_is_refused() {
        assert!(unpad(vec![0; 256]).is_err());
        assert!(unpad(vec![1; 256]).is_err());
        assert!(unpad(vec![0x80; 300]).is_err());
    }
}
