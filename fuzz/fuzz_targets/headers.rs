//! Arbitrary bytes as `Retry-After` / `Retry-After-Ms` values, as header names and as
//! response bodies, into `parse_retry_after`, `parse_retry_after_ms`, `retry_hint`,
//! `http_verdict_at` and `fusebox::http::classify_response`, for many statuses: never a
//! panic, hints of at most a year, and every verdict as the documented rules say.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::headers(data);
});
