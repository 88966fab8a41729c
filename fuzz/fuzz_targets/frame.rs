//! The frame scanner and message decoding on arbitrary bytes, split at an arbitrary point: never a
//! panic, the same frames however the bytes are split, and every accepted frame decodes within
//! the limits (bounded memory: the scanner refused anything over them from its headers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_sidecar::rpc::codec::{Limits, Scanner};
use llm_sidecar::rpc::Message;

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits { frame: 64 * 1024, depth: 16, elements: 1000, decoded: 256 * 1024 };

/// The frame lengths found in `data` fed in two pieces (split at `split`), and the error if any.
fn frames(data: &[u8], split: usize) -> (Vec<usize>, bool) {
    let mut sc = Scanner::default();
    let mut found = Vec::new();
    let mut start = 0;
    let mut end = split.min(data.len());
    loop {
        match sc.scan(&data[start..end], &LIMITS) {
            Ok(Some(len)) => {
                found.push(len);
                start += len;
            }
            Ok(None) if end < data.len() => end = data.len(),
            Ok(None) => return (found, false),
            Err(_) => return (found, true),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else { return };
    let whole = frames(data, data.len());
    let split_up = frames(data, usize::from(split) * data.len() / 256);
    assert_eq!(whole, split_up, "scanning depends on how the bytes are split");
    let mut start = 0;
    for len in whole.0 {
        // What the daemon does with each frame: decode it, then answer it (a decoded message is
        // re-encodable; a bad request's error names its msgid when it had one).
        match Message::decode(&data[start..start + len]) {
            Ok(m) => drop(m.encode()),
            Err(e) => drop(llm_sidecar::rpc::message::encode_error_response(
                e.id.unwrap_or(0),
                &llm_sidecar::rpc::RpcError::invalid_request(e.reason),
            )),
        }
        start += len;
    }
});
