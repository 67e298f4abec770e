//! The API key shared by `vine serve` and its clients: read from a file or the environment
//! (never from a command-line argument, which `ps` shows), compared in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Environment variable holding the key.
pub const ENV_KEY: &str = "VINE_API_KEY";
/// The original plan's name for the key, also honoured.
pub const ENV_KEY_ORIGINAL: &str = "VPS_API_KEY";
/// Environment variable naming a file that holds the key.
pub const ENV_KEY_FILE: &str = "VINE_API_KEY_FILE";

/// A secret API key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ApiKey {
    secret: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// A key from its text (surrounding whitespace is ignored; an empty key is refused).
    pub fn new(secret: &str) -> Result<Self> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(Error::Invalid("the API key is empty".into()));
        }
        Ok(ApiKey {
            secret: secret.to_string(),
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// The key from `file` if given, else `$VINE_API_KEY_FILE`, `$VINE_API_KEY`, `$VPS_API_KEY`.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Option<Self>> {
        let from_file = |p: &Path| -> Result<Option<Self>> {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Error::Invalid(format!("cannot read the API key file {}: {e}", p.display()))
            })?;
            Self::new(&text).map(Some)
        };
        if let Some(p) = file {
            return from_file(p);
        }
        if let Some(p) = std::env::var_os(ENV_KEY_FILE).filter(|v| !v.is_empty()) {
            return from_file(Path::new(&p));
        }
        for var in [ENV_KEY, ENV_KEY_ORIGINAL] {
            if let Ok(v) = std::env::var(var)
                && !v.trim().is_empty()
            {
                return Self::new(&v).map(Some);
            }
        }
        Ok(None)
    }

    /// The key's text, to send in a request header.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// True if `presented` is this key. Compares SHA-256 digests in constant time, so
    /// neither the key's length nor its prefix leaks through timing.
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        d.iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_key() {
        let k = ApiKey::new(" s3cret\n").unwrap();
        assert!(k.matches("s3cret"));
        assert!(!k.matches("s3cre"));
        assert!(!k.matches(""));
        assert!(ApiKey::new("  ").is_err());
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
    }
}
