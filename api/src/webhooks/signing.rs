//! Signatures as the Standard Webhooks specification writes them: HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64 bytes after `whsec_`, sent
//! as `v1,{base64}`; several, space-separated, while a rotated secret still signs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a secret in the specification's form.
const PREFIX: &str = "whsec_";
/// The specification asks for 24 to 64 bytes.
const SECRET_BYTES: usize = 32;

/// A new secret, in the `whsec_…` form given to the user.
pub fn new_secret() -> Zeroizing<String> {
    let bytes: Zeroizing<[u8; SECRET_BYTES]> = Zeroizing::new(rand::random());
    Zeroizing::new(format!("{PREFIX}{}", STANDARD.encode(bytes.as_ref())))
}

/// The key of a `whsec_…` secret; `None` if it is not in that form.
pub fn key_of(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    let encoded = secret.strip_prefix(PREFIX)?;
    STANDARD.decode(encoded).ok().map(Zeroizing::new)
}

/// The `webhook-signature` header for `body`, signed with each of `keys`.
pub fn signature_header(keys: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .filter_map(|key| sign(key, id, timestamp, body))
        .map(|signature| format!("v1,{}", STANDARD.encode(signature)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `None` never happens: HMAC takes a key of any length.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Option<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks/spec, "Signature scheme").
    #[test]
    fn the_specifications_example_signs_the_same() {
        let key = key_of("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = signature_header(
            &[&key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn each_key_signs_and_secrets_are_new_and_in_form() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(*a, *b);
        let (ka, kb) = (key_of(&a).unwrap(), key_of(&b).unwrap());
        assert_eq!(ka.len(), SECRET_BYTES);
        let header = signature_header(&[&ka, &kb], "msg_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_ne!(parts[0], parts[1]);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert!(key_of("whsec_not base64!").is_none());
        assert!(key_of("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
    }
}
