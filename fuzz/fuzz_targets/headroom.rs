//! Arbitrary bytes as a block of rate-limit headers (`name: value` lines) and as the value
//! of each of OpenAI's and Anthropic's rate-limit headers, into
//! `fusebox::http::parse_headroom`, `parse_reset` and a `HeadroomCell`: never a panic, resets
//! of at most a year, and every quota as the documented rules say. Its seeds are those of
//! `headers` (`fuzz/seeds/headers`), whose check runs this one too.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::headroom(data);
});
