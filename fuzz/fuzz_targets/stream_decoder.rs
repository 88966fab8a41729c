//! Each adapter's stream decoder (and its whole-body parser) on arbitrary provider bytes: the
//! body is cut into frames by the adapter's own framer, fed in two pieces, and every frame goes
//! to a fresh decoder exactly as the daemon does. Never a panic, whatever the provider sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_sidecar::providers::{self, responses::Responses, AdapterKind, Framer, Provider};

/// The first input byte picks the adapter (its low 3 bits, modulo 5).
fn provider(pick: u8) -> &'static dyn Provider {
    match pick % 8 % 5 {
        0 => providers::adapter(AdapterKind::Openai),
        1 => &Responses,
        2 => providers::adapter(AdapterKind::Anthropic),
        3 => providers::adapter(AdapterKind::Gemini),
        _ => providers::adapter(AdapterKind::Ollama),
    }
}

fuzz_target!(|input: &[u8]| {
    let [pick, split, data @ ..] = input else { return };
    let provider = provider(*pick);
    let at = usize::from(*split) * data.len() / 256;

    let mut framer = Framer::new(provider.framing());
    let mut decoder = provider.decoder();
    let mut frames = Vec::new();
    let mut deltas = Vec::new();
    let fed = framer.feed(&data[..at], &mut frames).and_then(|()| framer.feed(&data[at..], &mut frames));
    if fed.is_ok() {
        let _ = framer.finish(&mut frames);
    }
    for frame in &frames {
        // The daemon ends the stream at the first error event.
        if decoder.on_frame(frame, &mut deltas).is_err() {
            break;
        }
        let _ = decoder.finished();
    }
    let _ = decoder.summary();

    // The same bytes as a complete (non-streamed) 2xx body.
    let _ = provider.parse_body(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = provider.body_usage(&v);
    }
});
