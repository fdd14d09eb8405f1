//! Paging: page sizes, and opaque page tokens (kind, position and an HMAC
//! binding them to what is listed), hex-encoded.

use crate::error::RequestError;

const SEP: char = '\u{1f}';
/// Longest token accepted, in characters.
const MAX_LEN: usize = 512;

/// The key tokens are authenticated with: random per process, so a token is
/// valid for the life of the gateway that issued it, and neither its binding
/// nor its position can be forged or guessed from outside.
fn key() -> &'static ring::hmac::Key {
    static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // No system randomness: fall back to a key from the clock and
            // address space, still unknown to callers.
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &rng);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_bytes())
        })
    })
}

fn message(kind: &str, bound_to: &str, position: &str) -> String {
    format!("{kind}{SEP}{bound_to}{SEP}{position}")
}

fn tag(kind: &str, bound_to: &str, position: &str) -> String {
    let t = ring::hmac::sign(key(), message(kind, bound_to, position).as_bytes());
    t.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A token of `kind` for the listing of `bound_to` at `position`. It carries
/// the position and an HMAC over kind, binding and position; never the
/// binding itself (a personal id must not travel in tokens that end up in
/// client logs).
pub fn seal(kind: &str, bound_to: &str, position: &[String]) -> String {
    let position = position.join(&SEP.to_string());
    let raw = format!(
        "{kind}{SEP}{position}{SEP}{}",
        tag(kind, bound_to, &position)
    );
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The position in a token of `kind` issued for `bound_to`, if it is one.
pub fn open(token: &str, kind: &str, bound_to: &str) -> Option<Vec<String>> {
    if token.len() > MAX_LEN {
        return None;
    }
    let bytes = unhex(token)?;
    let raw = String::from_utf8(bytes).ok()?;
    let (head, given_tag) = raw.rsplit_once(SEP)?;
    let (given_kind, position) = head.split_once(SEP)?;
    if given_kind != kind {
        return None;
    }
    let given = unhex(given_tag)?;
    ring::hmac::verify(key(), message(kind, bound_to, position).as_bytes(), &given).ok()?;
    Some(position.split(SEP).map(str::to_owned).collect())
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
        // A changed position is refused, and the id is not in the token.
        let forged = seal("x1", "092085000123", &["b".into(), "42".into()]);
        assert_ne!(forged, t);
        let raw = String::from_utf8(
            (0..t.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
                .collect(),
        )
        .unwrap();
        assert!(!raw.contains("092085000123"));
        let tampered = raw.replacen("42", "43", 1);
        let hex: String = tampered.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(open(&hex, "x1", "092085000123"), None);
    }
}
