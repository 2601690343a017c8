//! Step tokens: self-contained, HMAC-SHA256-signed, no server-side state.
//!
//! Format (see `spec/token-format.md`): `wt1.<payload>.<tag>` where `<payload>` is the
//! unpadded base64url encoding of 25 bytes
//!
//! | bytes | field |
//! |---|---|
//! | 1 | kind (1 advance, 2 checkpoint, 3 resume) |
//! | 2 | key id (big-endian) |
//! | 16 | session id (ULID bytes) |
//! | 4 | node number (big-endian) |
//! | 2 | attempt (big-endian) |
//!
//! and `<tag>` is the unpadded base64url encoding of the first 16 bytes of
//! HMAC-SHA256(key, "wt1." + payload-text). Tokens are 61 characters long.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{ApiError, ErrorCode, Retry};
use crate::ids::{Attempt, KeyId, NodeId, SessionId};

/// Prefix of every token of this format.
pub const TOKEN_PREFIX: &str = "wt1.";
const PAYLOAD_LEN: usize = 25;
const TAG_LEN: usize = 16;
/// Length of every token, in characters.
pub const TOKEN_LEN: usize = 61;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Submit the output of one attempt of one step node.
    Advance,
    /// Record progress on the current node without advancing.
    Checkpoint,
    /// Find the session again (rehydrate, rewind) — never advances.
    Resume,
}

impl TokenKind {
    fn to_byte(self) -> u8 {
        match self {
            TokenKind::Advance => 1,
            TokenKind::Checkpoint => 2,
            TokenKind::Resume => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(TokenKind::Advance),
            2 => Some(TokenKind::Checkpoint),
            3 => Some(TokenKind::Resume),
            _ => None,
        }
    }
}

/// What a token asserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenClaims {
    /// Which operation the token allows (advance, checkpoint or resume).
    pub kind: TokenKind,
    /// The session the token belongs to.
    pub session: SessionId,
    /// The step node the token was minted for; a token for an earlier node is stale.
    pub node: NodeId,
    /// Attempt of that node.
    pub attempt: Attempt,
}

/// A signing key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKey {
    /// Key id, carried inside tokens.
    pub id: KeyId,
    /// 32 secret bytes, base64url in the keyring file.
    #[serde(with = "secret_b64")]
    pub secret: [u8; 32],
    /// When the key was created (RFC 3339), for operators.
    pub created_at: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        write!(f, "SigningKey({}, created {})", self.id, self.created_at)
    }
}

mod secret_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a signing key secret must be 32 bytes"))
    }
}

/// The keyring: a current key that signs, and optionally the previous key, which still
/// verifies (so tokens survive one rotation).
///
/// ```
/// use worktrain_core::ids::{Attempt, NodeId, SessionId};
/// use worktrain_core::token::{Keyring, TokenClaims, TokenError, TokenKind};
///
/// let mut keyring = Keyring::new([7; 32], "2026-01-01T00:00:00Z".into());
/// let claims = TokenClaims {
///     kind: TokenKind::Advance,
///     session: SessionId::from_parts(1_767_225_600_000, 42),
///     node: NodeId(1),
///     attempt: Attempt(1),
/// };
/// let token = keyring.mint(claims);
/// assert!(token.starts_with("wt1."));
/// assert_eq!(keyring.verify(&token)?, claims);
///
/// // A token signed with another secret is refused.
/// let other = Keyring::new([8; 32], "2026-01-01T00:00:00Z".into());
/// assert!(matches!(keyring.verify(&other.mint(claims)), Err(TokenError::BadSignature)));
///
/// // After a rotation, tokens of the previous key still verify ...
/// keyring.rotate([9; 32], "2026-02-01T00:00:00Z".into());
/// assert_eq!(keyring.verify(&token)?, claims);
/// // ... until the previous key is dropped.
/// keyring.drop_previous();
/// assert!(matches!(keyring.verify(&token), Err(TokenError::RetiredKey(_))));
/// # Ok::<(), TokenError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Keyring {
    /// File format version.
    pub version: u32,
    /// The signing key.
    pub current: SigningKey,
    /// The previous key, accepted for verification only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<SigningKey>,
}

type HmacSha256 = Hmac<Sha256>;

impl Keyring {
    /// A keyring with one key.
    pub fn new(secret: [u8; 32], created_at: String) -> Self {
        Self {
            version: 1,
            current: SigningKey {
                id: KeyId(1),
                secret,
                created_at,
            },
            previous: None,
        }
    }

    /// Rotate: the current key becomes the previous one (dropping the old previous key),
    /// and a new key with the next id signs from now on.
    pub fn rotate(&mut self, secret: [u8; 32], created_at: String) {
        let next = KeyId(self.current.id.0.wrapping_add(1).max(1));
        let old = std::mem::replace(
            &mut self.current,
            SigningKey {
                id: next,
                secret,
                created_at,
            },
        );
        self.previous = Some(old);
    }

    /// Stop accepting tokens signed with the previous key.
    pub fn drop_previous(&mut self) -> Option<SigningKey> {
        self.previous.take()
    }

    /// Mint a token with the current key.
    pub fn mint(&self, claims: TokenClaims) -> String {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = claims.kind.to_byte();
        payload[1..3].copy_from_slice(&self.current.id.0.to_be_bytes());
        payload[3..19].copy_from_slice(&claims.session.to_bytes());
        payload[19..23].copy_from_slice(&claims.node.0.to_be_bytes());
        payload[23..25].copy_from_slice(&claims.attempt.0.to_be_bytes());
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let tag = sign(&self.current.secret, token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&tag[..TAG_LEN], &mut token);
        token
    }

    /// Verify a token and return its claims. Checks format, key and signature (in
    /// constant time); says nothing yet about whether the node is current.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        // A token has exactly one spelling: padding is refused, never trimmed away.
        if token.trim() != token {
            return Err(TokenError::Malformed(
                "it has surrounding whitespace (spaces, tabs or line breaks); pass it exactly as returned",
            ));
        }
        if token.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
            return Err(TokenError::Malformed(
                "expected `wt1.` followed by two base64url parts (61 characters)",
            ));
        }
        let rest = &token[TOKEN_PREFIX.len()..];
        let (payload_text, tag_text) = rest
            .split_once('.')
            .ok_or(TokenError::Malformed("missing `.` between payload and tag"))?;
        // The decoder rejects non-zero trailing bits, so each token has exactly one spelling.
        let payload = URL_SAFE_NO_PAD
            .decode(payload_text)
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_text)
            .map_err(|_| TokenError::Malformed("tag is not base64url"))?;
        if payload.len() != PAYLOAD_LEN || tag.len() != TAG_LEN {
            return Err(TokenError::Malformed("payload or tag has the wrong length"));
        }
        let key_id = KeyId(u16::from_be_bytes([payload[1], payload[2]]));
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == key_id)
            .ok_or_else(|| self.missing_key(key_id))?;
        let signed = &token[..TOKEN_PREFIX.len() + payload_text.len()];
        let mut mac = HmacSha256::new_from_slice(&key.secret)
            .map_err(|_| TokenError::Malformed("invalid key length"))?;
        mac.update(signed.as_bytes());
        mac.verify_truncated_left(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let kind =
            TokenKind::from_byte(payload[0]).ok_or(TokenError::Malformed("unknown token kind"))?;
        let mut session = [0u8; 16];
        session.copy_from_slice(&payload[3..19]);
        Ok(TokenClaims {
            kind,
            session: SessionId::from_bytes(session),
            node: NodeId(u32::from_be_bytes([
                payload[19],
                payload[20],
                payload[21],
                payload[22],
            ])),
            attempt: Attempt(u16::from_be_bytes([payload[23], payload[24]])),
        })
    }
}

impl Keyring {
    /// Why `id` is not held: key ids grow by one per rotation (from 1), so an id above
    /// the current one (or 0) was never issued here, while a lower one was rotated out.
    fn missing_key(&self, id: KeyId) -> TokenError {
        if id.0 == 0 || id.0 > self.current.id.0 {
            TokenError::UnknownKey {
                key: id,
                newest: self.current.id,
            }
        } else {
            TokenError::RetiredKey(id)
        }
    }
}

fn sign(secret: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; a 32-byte key cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts 32-byte keys"),
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Why a token was rejected before looking at the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed token.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Signed by a key id this keyring never issued (forged, or from another worktrain).
    #[error("token signed with key {key}, which was never issued here (newest: {newest})")]
    UnknownKey {
        /// The key id the token names.
        key: KeyId,
        /// The newest key id of this keyring.
        newest: KeyId,
    },
    /// Signed by a key that was rotated out.
    #[error("token signed with retired key {0}")]
    RetiredKey(KeyId),
    /// The HMAC does not match the claims: the token was altered or forged.
    #[error("token signature does not match")]
    BadSignature,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Malformed(why) => ApiError::new(
                ErrorCode::TokenMalformed,
                format!("the token is malformed: {why}"),
                Retry::AfterFix,
                "pass the token exactly as worktrain returned it (61 characters starting with `wt1.`); if it was lost, rehydrate the session by id",
            ),
            TokenError::UnknownKey { key, newest } => ApiError::new(
                ErrorCode::TokenUnknownKey,
                format!(
                    "the token names signing key {key}, which this worktrain never issued (its newest key is {newest}): it was altered, or minted by another worktrain"
                ),
                Retry::Never,
                "use a token this worktrain returned; if you have none, rehydrate the session by id (`worktrain session rehydrate <session-id>`)",
            ),
            TokenError::RetiredKey(k) => ApiError::new(
                ErrorCode::TokenRetiredKey,
                format!(
                    "the token was signed with key {k}, which was rotated out and is no longer accepted"
                ),
                Retry::AfterRehydrate,
                "rehydrate the session by id (`worktrain session rehydrate <session-id>`) to get fresh tokens",
            ),
            TokenError::BadSignature => ApiError::new(
                ErrorCode::TokenBadSignature,
                "the token's signature does not match: it was altered, truncated or minted by another worktrain",
                Retry::AfterFix,
                "use the token exactly as returned; copy it again from the last response, or rehydrate the session by id",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seed: u8) -> Keyring {
        Keyring::new([seed; 32], "2026-01-01T00:00:00Z".into())
    }

    fn claims() -> TokenClaims {
        TokenClaims {
            kind: TokenKind::Advance,
            session: SessionId::from_parts(1_700_000_000_000, 0xfeed_beef),
            node: NodeId(7),
            attempt: Attempt(2),
        }
    }

    #[test]
    fn round_trip_and_length() {
        let k = ring(1);
        let t = k.mint(claims());
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.len() <= 100);
        assert_eq!(k.verify(&t).unwrap(), claims());
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let k = ring(1);
        let t = k.mint(claims());
        let bytes = t.as_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.to_vec();
                b[i] ^= 1 << bit;
                let Ok(s) = String::from_utf8(b) else {
                    continue;
                };
                assert!(
                    k.verify(&s).is_err(),
                    "flip of bit {bit} at byte {i} accepted: {s}"
                );
            }
        }
    }

    #[test]
    fn every_character_substitution_is_rejected() {
        let k = ring(1);
        let t = k.mint(claims());
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        for i in 0..t.len() {
            for c in alphabet.chars() {
                if t.as_bytes()[i] as char == c {
                    continue;
                }
                let mut s = t.clone();
                s.replace_range(i..=i, &c.to_string());
                assert!(
                    k.verify(&s).is_err(),
                    "substitution at {i} with {c} accepted"
                );
            }
        }
    }

    #[test]
    fn other_keyring_and_rotation() {
        let mut k = ring(1);
        let t = k.mint(claims());
        assert_eq!(ring(2).verify(&t), Err(TokenError::BadSignature));
        k.rotate([9; 32], "later".into());
        assert_eq!(
            k.verify(&t).unwrap(),
            claims(),
            "previous key still verifies"
        );
        let t2 = k.mint(claims());
        assert_ne!(t, t2);
        k.rotate([10; 32], "even later".into());
        assert_eq!(k.verify(&t), Err(TokenError::RetiredKey(KeyId(1))));
        assert!(k.verify(&t2).is_ok());
        k.drop_previous();
        assert_eq!(k.verify(&t2), Err(TokenError::RetiredKey(KeyId(2))));
    }

    #[test]
    fn never_issued_key_ids_are_unknown_not_retired() {
        let k = ring(1);
        let mut rotated = ring(1);
        rotated.rotate([2; 32], "later".into());
        rotated.rotate([3; 32], "later still".into());
        // A keyring whose current id is far ahead mints a token naming key 3.
        let ahead = rotated.mint(claims());
        assert_eq!(
            k.verify(&ahead),
            Err(TokenError::UnknownKey {
                key: KeyId(3),
                newest: KeyId(1)
            })
        );
        let e = ApiError::from(k.verify(&ahead).unwrap_err());
        assert_eq!(e.code, ErrorCode::TokenUnknownKey);
        assert_eq!(e.retry, Retry::Never);
        assert!(e.message.contains("never issued"), "{}", e.message);
        let e = ApiError::from(TokenError::RetiredKey(KeyId(1)));
        assert_eq!(e.code, ErrorCode::TokenRetiredKey);
        assert_eq!(e.retry, Retry::AfterRehydrate);
    }

    #[test]
    fn surrounding_whitespace_is_refused_not_trimmed() {
        let k = ring(1);
        let t = k.mint(claims());
        for padded in [
            format!(" {t}"),
            format!("{t} "),
            format!("\t{t}"),
            format!("{t}\n"),
            format!("{t}\r\n"),
            format!("{t}\u{2028}"),
            format!("\u{feff}{t}"),
        ] {
            let e = k.verify(&padded).unwrap_err();
            let TokenError::Malformed(why) = e else {
                panic!("{padded:?}: {e:?}")
            };
            if padded.trim() != padded {
                assert!(why.contains("whitespace"), "{padded:?}: {why}");
            }
        }
    }

    #[test]
    fn truncation_and_garbage() {
        let k = ring(1);
        let t = k.mint(claims());
        assert!(matches!(k.verify(&t[..60]), Err(TokenError::Malformed(_))));
        assert!(matches!(k.verify(""), Err(TokenError::Malformed(_))));
        assert!(matches!(
            k.verify(&"x".repeat(61)),
            Err(TokenError::Malformed(_))
        ));
        let keyring_json = serde_json::to_string(&k).unwrap();
        assert!(!format!("{:?}", k).contains(&keyring_json[40..60]));
    }
}
