//! Paging: page sizes, and opaque page tokens: a kind, a tag of what the listing is about (a hash, so
//! that a personal id never travels inside a token that may end up in client
//! logs), and the position, hex-encoded.

use crate::error::RequestError;

const SEP: char = '\u{1f}';
/// Longest token accepted, in characters.
const MAX_LEN: usize = 512;

fn tag(bound_to: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bound_to.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A token of `kind` for the listing of `bound_to` at `position`.
pub fn seal(kind: &str, bound_to: &str, position: &[String]) -> String {
    let mut raw = format!("{kind}{SEP}{}", tag(bound_to));
    for p in position {
        raw.push(SEP);
        raw.push_str(p);
    }
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The position in a token of `kind` issued for `bound_to`, if it is one.
pub fn open(token: &str, kind: &str, bound_to: &str) -> Option<Vec<String>> {
    if token.len() % 2 != 0 || token.len() > MAX_LEN || !token.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let raw = String::from_utf8(bytes).ok()?;
    let mut parts = raw.split(SEP);
    if parts.next()? != kind || parts.next()? != tag(bound_to) {
        return None;
    }
    Some(parts.map(str::to_owned).collect())
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
    }
}
