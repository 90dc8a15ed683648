//! Arbitrary bytes, read as (lossy) UTF-8, into `Config::from_toml_str`: a configuration or a
//! typed error with a line inside the document, never a panic. An accepted configuration must
//! render back to TOML that reads to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::config_toml(data);
});
