//! Bearer-token authorisation of the admin routes.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::routes::{error, AppState};

/// Proof that a request carried `Authorization: Bearer <the admin token>`. As an extractor it
/// runs before the body is read, so an unauthorised request never gets its body buffered.
#[derive(Debug)]
pub(super) struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = state.admin_token.as_deref() else {
            // The admin routes are only mounted with a token; refuse all the same.
            return Err(error(StatusCode::NOT_FOUND, "not found"));
        };
        if authorized(&parts.headers, token) {
            Ok(Admin)
        } else {
            let mut response =
                error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token").into_response();
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(response)
        }
    }
}

/// Whether the headers hold exactly one `Authorization: Bearer <token>` with this token.
/// The scheme is matched case-insensitively (RFC 9110); the token exactly, in constant time.
pub(super) fn authorized(headers: &HeaderMap, token: &[u8]) -> bool {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let value = value.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return false;
    }
    let given = value[SCHEME.len()..].trim_ascii();
    constant_time_eq(given, token)
}

/// Compares `given` with `expected` in time that depends only on `expected`'s length: every
/// byte is compared, differences are OR-ed together, and nothing returns early on the first
/// differing byte. (The expected length is not treated as secret.)
pub(super) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"X3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3crets", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b""));
    }

    #[test]
    fn only_a_single_bearer_header_with_the_token_is_authorized() {
        let token = b"s3cret";
        assert!(authorized(&headers(&["Bearer s3cret"]), token));
        assert!(authorized(&headers(&["bearer s3cret"]), token));
        assert!(authorized(&headers(&["BEARER  s3cret "]), token));
        assert!(!authorized(&headers(&[]), token));
        assert!(!authorized(&headers(&["Bearer"]), token));
        assert!(!authorized(&headers(&["Bearer "]), token));
        assert!(!authorized(&headers(&["Basic s3cret"]), token));
        assert!(!authorized(&headers(&["s3cret"]), token));
        assert!(!authorized(&headers(&["Bearer wrong"]), token));
        assert!(!authorized(
            &headers(&["Bearer s3cret", "Bearer s3cret"]),
            token
        ));
    }
}
