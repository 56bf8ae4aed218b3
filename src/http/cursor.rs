//! Pagination cursors: opaque to clients, tamper-evident, and carrying their filters.
//!
//! A cursor is `base64url(json{after, filter}) "." base64url(hmac)`, signed with a key kept
//! in the database. A forged, truncated or foreign cursor fails the signature; a cursor used
//! with other filters than it was made for is refused too. Both are `400 INVALID_CURSOR`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{ApiCode, ApiError};
use crate::store::containers::ListFilter;

/// Bytes of the HMAC kept in a cursor: enough to make forgery hopeless, short enough to read.
const TAG_LEN: usize = 16;

#[derive(Serialize, Deserialize)]
struct Payload {
    after: i64,
    filter: ListFilter,
}

fn mac(key: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload);
    mac
}

pub fn encode(key: &[u8], after: i64, filter: &ListFilter) -> String {
    let payload = serde_json::to_vec(&Payload {
        after,
        filter: filter.clone(),
    })
    .unwrap_or_default();
    let tag = mac(key, &payload).finalize().into_bytes();
    format!("{}.{}", B64.encode(&payload), B64.encode(&tag[..TAG_LEN]))
}

fn invalid(why: &str) -> ApiError {
    ApiError::field(
        ApiCode::InvalidCursor,
        "cursor",
        serde_json::Value::Null,
        format!("invalid cursor: {why}"),
    )
}

/// Checks and opens a cursor; returns the key to continue after and the cursor's filters.
pub fn decode(key: &[u8], cursor: &str) -> Result<(i64, ListFilter), ApiError> {
    let (payload, tag) = cursor.split_once('.').ok_or_else(|| invalid("malformed"))?;
    let payload = B64.decode(payload).map_err(|_| invalid("malformed"))?;
    let tag = B64.decode(tag).map_err(|_| invalid("malformed"))?;
    if tag.len() != TAG_LEN {
        return Err(invalid("malformed"));
    }
    mac(key, &payload)
        .verify_truncated_left(&tag)
        .map_err(|_| invalid("not issued by this server"))?;
    let p: Payload = serde_json::from_slice(&payload).map_err(|_| invalid("malformed"))?;
    Ok((p.after, p.filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_evidence() {
        let key = b"0123456789abcdef";
        let f = ListFilter {
            status: Some(vec!["running".into()]),
            tag: Some("web".into()),
            tenant: None,
            q: None,
        };
        let c = encode(key, 42, &f);
        assert_eq!(decode(key, &c).unwrap(), (42, f.clone()));
        assert!(decode(b"another key", &c).is_err());
        assert!(decode(key, &c[..c.len() - 2]).is_err());
        // Same signature, other payload.
        let (_, tag) = c.split_once('.').unwrap();
        let forged = format!(
            "{}.{}",
            B64.encode(br#"{"after":1,"filter":{"status":null,"tag":null}}"#),
            tag
        );
        assert!(decode(key, &forged).is_err());
        assert!(decode(key, "garbage").is_err());
    }
}
