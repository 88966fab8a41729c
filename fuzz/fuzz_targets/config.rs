//! Config parsing on arbitrary text: never a panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_sidecar::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Config::parse(text, std::path::Path::new("fuzz.toml"));
});
