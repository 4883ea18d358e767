//! Decoding `write_files[].content` per its `encoding`, as coreos-cloudinit did.

use super::model::Encoding;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use base64::Engine as _;
use std::io::Read;
use thiserror::Error;

/// Largest decoded file accepted. Cloud-configs carry small files; the cap stops a gzip bomb
/// in user data from filling memory during validation or at boot.
pub const MAX_DECODED: u64 = 64 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("content is not valid base64 ({0}); check for truncation or a wrong encoding")]
    Base64(String),
    #[error("content is not valid gzip data ({0}); gzip the file, then base64 it (gz+base64)")]
    Gzip(String),
    #[error("decoded content is larger than {} MiB; ship big files another way", MAX_DECODED >> 20)]
    TooLarge,
}

/// The bytes to write for `content` under `encoding` (`None`: the text itself).
pub fn decode(content: &str, encoding: Option<Encoding>) -> Result<Vec<u8>, DecodeError> {
    match encoding {
        None => Ok(content.as_bytes().to_vec()),
        Some(Encoding::Base64) => base64(content),
        Some(Encoding::Gzip) => gunzip(content.as_bytes()),
        Some(Encoding::GzipBase64) => gunzip(&base64(content)?),
    }
}

/// Base64 as Go's decoder took it from YAML: line breaks (block scalars) are ignored. Other
/// whitespace and missing padding are tolerated too; they cannot change the meaning.
pub fn base64(content: &str) -> Result<Vec<u8>, DecodeError> {
    let compact: Vec<u8> = content
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD_PAD_INDIFFERENT
        .decode(compact)
        .map_err(|e| DecodeError::Base64(e.to_string()))
}

/// User data as delivered: gzip-compressed data (as EC2 users send to fit its 16 KiB limit,
/// and coreos-cloudinit accepted) is decompressed; anything else is returned as is.
pub fn user_data_bytes(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if data.starts_with(&[0x1f, 0x8b]) {
        gunzip(data)
    } else {
        Ok(data.to_vec())
    }
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(MAX_DECODED + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_DECODED {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzipped_user_data_is_decompressed_plain_is_kept() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"#cloud-config\nhostname: z\n").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            user_data_bytes(&gz).unwrap(),
            b"#cloud-config\nhostname: z\n"
        );
        assert_eq!(user_data_bytes(b"#!/bin/sh\n").unwrap(), b"#!/bin/sh\n");
        assert!(user_data_bytes(&[0x1f, 0x8b, 0, 1]).is_err());
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("in-memory write");
        e.finish().expect("in-memory finish")
    }

    #[test]
    fn every_spelling_decodes() {
        let text = "hello, crust\n";
        let b64 = STANDARD_PAD_INDIFFERENT.encode(text);
        let gz_b64 = STANDARD_PAD_INDIFFERENT.encode(gz(text.as_bytes()));
        for spelling in Encoding::SPELLINGS {
            let enc = Encoding::parse(spelling).expect("known spelling");
            let input = match enc {
                Encoding::Base64 => b64.clone(),
                Encoding::GzipBase64 => gz_b64.clone(),
                // Raw gzip only reaches us through `!!binary`; see schema.
                Encoding::Gzip => continue,
            };
            assert_eq!(
                decode(&input, Some(enc)).expect(spelling),
                text.as_bytes(),
                "{spelling}"
            );
        }
        assert_eq!(Encoding::parse("gzip"), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("uu"), None);
        assert_eq!(decode(text, None).expect("plain"), text.as_bytes());
    }

    #[test]
    fn base64_with_line_breaks_and_without_padding() {
        assert_eq!(base64("aGVs\nbG8=\n").expect("wrapped"), b"hello");
        assert_eq!(base64("aGVsbG8").expect("unpadded"), b"hello");
        assert!(matches!(base64("not base64!"), Err(DecodeError::Base64(_))));
    }

    #[test]
    fn gzip_errors_and_bomb_cap() {
        assert!(matches!(
            decode("aGVsbG8=", Some(Encoding::GzipBase64)),
            Err(DecodeError::Gzip(_))
        ));
        let bomb = gz(&vec![0u8; (MAX_DECODED + 10) as usize]);
        let b64 = STANDARD_PAD_INDIFFERENT.encode(bomb);
        assert_eq!(
            decode(&b64, Some(Encoding::GzipBase64)),
            Err(DecodeError::TooLarge)
        );
    }
}
