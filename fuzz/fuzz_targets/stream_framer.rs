//! The SSE and NDJSON framers on arbitrary provider bytes, fed in two pieces: never a panic, and
//! the same frames however the body is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_sidecar::providers::{Framer, Framing};

fn frames(framing: Framing, data: &[u8], split: usize) -> Option<Vec<llm_sidecar::providers::Frame>> {
    let mut f = Framer::new(framing);
    let mut out = Vec::new();
    f.feed(&data[..split], &mut out).ok()?;
    f.feed(&data[split..], &mut out).ok()?;
    f.finish(&mut out).ok()?;
    Some(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else { return };
    let at = usize::from(split) * data.len() / 256;
    for framing in [Framing::Sse, Framing::Ndjson] {
        assert_eq!(frames(framing, data, data.len()), frames(framing, data, at));
    }
});
