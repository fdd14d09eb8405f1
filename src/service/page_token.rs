//! Paging: page sizes, and opaque page tokens, hex-encoded. A token is its
//! position (where the next page starts) sealed with ChaCha20-Poly1305: the
//! position is encrypted, so a token tells its holder nothing (not how many
//! records the log holds before it), and the token kind and what is listed
//! are bound in as associated data, so a token is refused for any other
//! listing, and any change to it is refused.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

use crate::error::RequestError;

const SEP: char = '\u{1f}';
/// Longest token accepted, in characters.
const MAX_LEN: usize = 512;

/// The keys tokens are sealed with. With the file log they are random per
/// process ([`Keys::random`]): a token is valid for the life of the gateway
/// that issued it. With the PostgreSQL log every instance derives them from
/// the secret the database keeps ([`Keys::from_secret`]), so any instance
/// accepts any other's tokens. Either way they cannot be forged or read from
/// outside.
pub struct Keys {
    aead: LessSafeKey,
    /// Makes nonces (see [`Keys::nonce`]).
    nonces: ring::hmac::Key,
    /// Random per process: instances sharing the keys never derive the same
    /// nonce from their counters.
    salt: [u8; 16],
    counter: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("page_token::Keys(..)")
    }
}

/// `out.len()` bytes of system randomness, or, without any, of the clock and
/// address space (still unknown to callers).
fn random(out: &mut [u8]) {
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, out).is_err() {
        let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &rng);
        let d = ring::digest::digest(&ring::digest::SHA512, seed.as_bytes());
        for (o, b) in out.iter_mut().zip(d.as_ref().iter().cycle()) {
            *o = *b;
        }
    }
}

impl Keys {
    /// Keys of this process alone.
    pub fn random() -> Keys {
        let mut secret = [0u8; 64];
        random(&mut secret);
        Keys::from_secret(&secret)
    }

    /// Keys from a 64-byte secret: the first half keys the AEAD, the second
    /// the nonces.
    pub fn from_secret(secret: &[u8; 64]) -> Keys {
        let (aead, nonces) = secret.split_at(32);
        let mut salt = [0u8; 16];
        random(&mut salt);
        Keys {
            // 32 bytes is ChaCha20-Poly1305's key length, so this cannot fail.
            aead: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, aead).unwrap_or_else(|_| unreachable!()),
            ),
            nonces: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, nonces),
            salt,
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A fresh nonce: a keyed PRF (HMAC-SHA256) of this process's salt and
    /// counter, cut to 96 bits. Unique for every token of this key (so the
    /// AEAD stays safe, also across instances sharing it), unpredictable,
    /// and telling nothing of the counter; no system call, and nothing that
    /// can fail, per token.
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut input = [0u8; 24];
        input[..16].copy_from_slice(&self.salt);
        input[16..].copy_from_slice(&n.to_be_bytes());
        let tag = ring::hmac::sign(&self.nonces, &input);
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        out
    }
}

fn aad(kind: &str, bound_to: &str) -> Vec<u8> {
    format!("{kind}{SEP}{bound_to}").into_bytes()
}

/// Lowercase hex only, as [`seal`] writes it: any change to a token, even
/// of a digit's case, makes it another token (and so refused).
fn unhex(text: &str) -> Option<Vec<u8>> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if text.len() % 2 != 0 || !text.bytes().all(lower_hex) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

impl Keys {
    /// A token of `kind` for the listing of `bound_to` at `position`: nonce and
    /// sealed position. Neither the position nor the binding can be read from it
    /// (a personal id must not travel in tokens that end up in client logs).
    pub fn seal(&self, kind: &str, bound_to: &str, position: &[String]) -> String {
        let nonce_bytes = self.nonce();
        let mut body = position.join(&SEP.to_string()).into_bytes();
        let sealed = self.aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(aad(kind, bound_to)),
            &mut body,
        );
        if sealed.is_err() {
            // Only for inputs of gigabytes; positions are a few dozen bytes.
            return String::new();
        }
        nonce_bytes
            .iter()
            .chain(body.iter())
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The position in a token of `kind` issued for `bound_to`, if it is one.
    pub fn open(&self, token: &str, kind: &str, bound_to: &str) -> Option<Vec<String>> {
        if token.len() > MAX_LEN {
            return None;
        }
        let bytes = unhex(token)?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce_bytes, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad(kind, bound_to)), &mut sealed)
            .ok()?;
        let position = std::str::from_utf8(plain).ok()?;
        Some(position.split(SEP).map(str::to_owned).collect())
    }
}

/// Page size when the caller sets none.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Larger page sizes are reduced to this.
pub const MAX_PAGE_SIZE: usize = 100;

/// A request's `page_size`: 0 means the default, larger than the maximum
/// means the maximum, negative is an error.
pub fn page_size(requested: i32) -> Result<usize, RequestError> {
    match requested {
        n if n < 0 => Err(RequestError::invalid(
            "page_size",
            format!("must not be negative, got {n}"),
        )),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// The error for a token that does not fit the request.
pub fn invalid(bound_field: &str) -> RequestError {
    RequestError::invalid(
        "page_token",
        format!("not a token this gateway issued for this {bound_field}; pass next_page_token of the previous response unchanged, with the same {bound_field}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(kind: &str, bound_to: &str, position: &[String]) -> String {
        keys().seal(kind, bound_to, position)
    }

    fn open(token: &str, kind: &str, bound_to: &str) -> Option<Vec<String>> {
        keys().open(token, kind, bound_to)
    }

    fn keys() -> &'static Keys {
        static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        KEYS.get_or_init(Keys::random)
    }

    /// Found by `fuzz_page_tokens`: a hex digit put in upper case still
    /// opened, so a token "changed in any way" was not always refused.
    #[test]
    fn a_token_with_a_digit_in_upper_case_is_refused() {
        let token = seal("records", "s", &["7".to_owned()]);
        assert!(open(&token, "records", "s").is_some());
        let at = token.find(|c: char| c.is_ascii_lowercase()).unwrap();
        let mut changed = token.clone();
        changed.replace_range(at..=at, &token[at..=at].to_ascii_uppercase());
        assert!(open(&changed, "records", "s").is_none());
    }

    fn bytes(token: &str) -> Vec<u8> {
        unhex(token).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let t = seal("x1", "092085000123", &["a".into(), "42".into()]);
        assert_eq!(
            open(&t, "x1", "092085000123"),
            Some(vec!["a".to_owned(), "42".to_owned()])
        );
        assert_eq!(open(&t, "x1", "092085000124"), None);
        assert_eq!(open(&t, "y1", "092085000123"), None);
        assert_eq!(open("zz", "x1", "092085000123"), None);
        assert_eq!(open("abc", "x1", "092085000123"), None);
        assert_eq!(open("é1", "x1", "092085000123"), None);
        assert_eq!(open("", "x1", "092085000123"), None);
    }

    #[test]
    fn tokens_reveal_neither_position_nor_binding() {
        let position = "position-1234567890".to_owned();
        let a = seal("x1", "092085000123", std::slice::from_ref(&position));
        let b = seal("x1", "092085000123", std::slice::from_ref(&position));
        // The same position seals differently every time...
        assert_ne!(a, b);
        for t in [&a, &b] {
            let raw = bytes(t);
            let shown = String::from_utf8_lossy(&raw);
            // ...and neither it nor the binding appear in the token.
            assert!(!shown.contains("1234567890") && !shown.contains("092085000123"));
            assert!(!t.contains("1234567890"));
            assert_eq!(open(t, "x1", "092085000123"), Some(vec![position.clone()]));
        }
        // Positions of the same length give tokens of the same length.
        assert_eq!(
            seal("x1", "s", &["1000".into()]).len(),
            seal("x1", "s", &["9999".into()]).len()
        );
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let t = seal("x1", "092085000123", &["17".into()]);
        let raw = bytes(&t);
        for i in 0..raw.len() {
            let mut changed = raw.clone();
            changed[i] ^= 0x01;
            let hex: String = changed.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(open(&hex, "x1", "092085000123"), None, "byte {i}");
        }
        // Cut short or extended: refused too.
        assert_eq!(open(&t[..t.len() - 2], "x1", "092085000123"), None);
        assert_eq!(open(&format!("{t}00"), "x1", "092085000123"), None);
    }

    #[test]
    fn keys_from_one_secret_open_each_others_tokens_and_never_share_a_nonce() {
        let secret = [7u8; 64];
        let (a, b) = (Keys::from_secret(&secret), Keys::from_secret(&secret));
        let t = a.seal("x1", "s", &["9".into()]);
        assert_eq!(b.open(&t, "x1", "s"), Some(vec!["9".to_owned()]));
        // Both start their counters at 0, yet their nonces differ.
        assert_ne!(a.nonce(), b.nonce());
        assert_eq!(Keys::from_secret(&[8u8; 64]).open(&t, "x1", "s"), None);
        assert_eq!(Keys::random().open(&t, "x1", "s"), None);
    }
}
