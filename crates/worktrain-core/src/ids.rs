//! Identifier newtypes. Each kind of id has its own type so that a node number can
//! never be passed where a session id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Prefix of every rendered session id (`ses_01j…`).
pub const SESSION_ID_PREFIX: &str = "ses_";

/// A session id: a ULID (48-bit timestamp + 80 random bits), rendered as
/// `ses_` followed by 26 lowercase Crockford base32 characters. Sortable by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(ulid::Ulid);

impl SessionId {
    /// A fresh id from the given clock reading (ms since the Unix epoch) and 80 random bits.
    pub fn from_parts(timestamp_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(timestamp_ms, random))
    }

    /// The 16 raw bytes (used inside tokens).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Rebuild from the 16 raw bytes found in a token.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(ulid::Ulid::from_bytes(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SESSION_ID_PREFIX}{}",
            self.0.to_string().to_ascii_lowercase()
        )
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a session id (expected `ses_` followed by 26 base32 characters)")]
pub struct InvalidSessionId {
    /// The rejected input.
    pub input: String,
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || InvalidSessionId {
            input: s.chars().take(64).collect(),
        };
        let body = s.strip_prefix(SESSION_ID_PREFIX).ok_or_else(err)?;
        // 26 base32 characters hold 130 bits; a ULID is 128, so the first one is at most
        // `7`. The decoder silently drops overflowing bits, which would alias ids.
        if body.len() != 26 || !matches!(body.as_bytes()[0], b'0'..=b'7') {
            return Err(err());
        }
        ulid::Ulid::from_string(&body.to_ascii_uppercase())
            .map(SessionId)
            .map_err(|_| err())
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node of a session's step graph: one entry into a step. Numbered from 1 in the
/// order nodes are created; a loop iteration or a rewind creates a new node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Attempt number of a node: 1 for the first submission, +1 after each blocked submission.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct Attempt(pub u16);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Id of a signing key in the keyring.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct KeyId(pub u16);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

/// A sequence number inside one session's event log (1-based, contiguous).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A SHA-256 digest, rendered as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The all-zero digest used as the predecessor of a session's first event.
    pub const ZERO: Sha256Hash = Sha256Hash([0; 32]);

    /// Lowercase hex rendering.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 12 hex characters, for human output.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.short())
    }
}

/// Why a string is not a SHA-256 hex digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a sha256 digest (expected 64 hex characters)")]
pub struct InvalidHash {
    /// The rejected input (truncated).
    pub input: String,
}

impl FromStr for Sha256Hash {
    type Err = InvalidHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidHash {
            input: s.chars().take(80).collect(),
        })?;
        Ok(Self(out))
    }
}

impl Serialize for Sha256Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Declares a validated string id newtype (`[a-z0-9][a-z0-9._-]*`, at most 64 chars).
macro_rules! slug_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidSlug> {
                let s = s.into();
                validate_slug(&s, $what)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidSlug;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$",
                    "description": concat!("A ", $what, ": lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64 characters.")
                })
            }
        }
    };
}

/// Why a string is not a valid slug id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a valid {what}: use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
)]
pub struct InvalidSlug {
    /// The rejected input (truncated).
    pub input: String,
    /// What kind of id was expected.
    pub what: &'static str,
}

fn validate_slug(s: &str, what: &'static str) -> Result<(), InvalidSlug> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || (i > 0 && (b == b'.' || b == b'_' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(InvalidSlug {
            input: s.chars().take(80).collect(),
            what,
        })
    }
}

slug_id!(
    /// Id of a workflow (`coding-task`).
    WorkflowId,
    "workflow id"
);
slug_id!(
    /// Id of a step inside a workflow (`plan`).
    StepId,
    "step id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_and_is_case_insensitive() {
        let id = SessionId::from_parts(1_700_000_000_000, 42);
        let s = id.to_string();
        assert!(s.starts_with("ses_"));
        assert_eq!(s.len(), 30);
        assert_eq!(s.parse::<SessionId>().unwrap(), id);
        assert_eq!(
            s.to_ascii_uppercase()
                .replace("SES_", "ses_")
                .parse::<SessionId>()
                .unwrap(),
            id
        );
        assert!("ses_short".parse::<SessionId>().is_err());
        assert!(
            "xyz_01jd0000000000000000000000"
                .parse::<SessionId>()
                .is_err()
        );
    }

    #[test]
    fn slugs_are_validated() {
        assert!(StepId::new("plan-2").is_ok());
        assert!(StepId::new("Plan").is_err());
        assert!(StepId::new("-plan").is_err());
        assert!(StepId::new("").is_err());
        assert!(StepId::new("a".repeat(65)).is_err());
    }

    #[test]
    fn hash_hex_round_trip() {
        let h = Sha256Hash::of(b"abc");
        assert_eq!(h.to_hex().parse::<Sha256Hash>().unwrap(), h);
        assert!("zz".parse::<Sha256Hash>().is_err());
    }
}
