#!/usr/bin/env bash
# Builds the seed corpus fuzz/corpus/<target>/ from the recorded provider fixtures
# (tests/fixtures/providers), a few hand-made MessagePack-RPC frames, and the TOML examples in the
# README and docs. Idempotent: re-running overwrites the seeds (libFuzzer's own finds, named by
# their hash, are left alone). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../tests/fixtures/providers
mkdir -p corpus/frame corpus/stream_framer corpus/stream_decoder corpus/config

# stream_framer: split byte (0x80 = the middle) + a recorded streaming body.
# stream_decoder: adapter byte (0 chat, 1 responses, 2 anthropic, 3 gemini, 4 ollama) + split byte
# + a recorded streaming or complete body of that adapter.
for f in "$fixtures"/*.sse "$fixtures"/*.ndjson "$fixtures"/*.json; do
    name="$(basename "$f")"
    case "$name" in *.request.json) continue ;; esac
    case "$name" in
        openai_responses_*) pick='\x01' ;;
        anthropic_*) pick='\x02' ;;
        gemini_*) pick='\x03' ;;
        ollama_*) pick='\x04' ;;
        *) pick='\x00' ;; # OpenAI chat and the OpenAI-compatible ones (deepseek, groq, openrouter)
    esac
    case "$name" in *.sse | *.ndjson) { printf '\x80'; cat "$f"; } > "corpus/stream_framer/seed-$name" ;; esac
    { printf "$pick"'\x80'; cat "$f"; } > "corpus/stream_decoder/seed-$name"
done

# frame: split byte + MessagePack-RPC frames.
frame() { printf '%b' "$2" > "corpus/frame/seed-$1"; }
# [0, 1, "daemon.ping", []]
frame ping '\x80\x94\x00\x01\xabdaemon.ping\x90'
# [2, "$/cancel", [{"id": 7}]]
frame cancel '\x80\x93\x02\xa8$/cancel\x91\x81\xa2id\x07'
# [0, 2, "chat", [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": true}]]
frame chat '\x40\x94\x00\x02\xa4chat\x91\x83\xa5model\xabgpt-4o-mini\xa8messages\x91\x82\xa4role\xa4user\xa7content\xa2hi\xa6stream\xc3'
# [1, 3, nil, {"ok": true}] then [1, 4, [1, "bad"], nil]: two frames in one read
frame responses '\x10\x94\x01\x03\xc0\x81\xa2ok\xc3\x94\x01\x04\x92\x01\xa3bad\xc0'
# a request with bin, ext, float, negative and 32-bit-length fields
frame types '\x80\x94\x00\xce\xff\xff\xff\xff\xa1x\x95\xc4\x02ab\xd4\x01\x00\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\xd0\x80\xdb\x00\x00\x00\x01z'
# nesting and a map key that is itself a map
frame nested '\x80\x94\x00\x05\xa1n\x91\x91\x91\x91\x91\x81\x81\x80\x80\x90'

# config: every ```toml block of the README and docs, one file each.
for md in ../README.md ../docs/*.md; do
    awk -v out="corpus/config/seed-$(basename "$md" .md)" '
        /^```toml/ { n++; file = out "-" n ".toml"; printf "" > file; on = 1; next }
        /^```/ { on = 0; next }
        on { print >> file }
    ' "$md"
done
for p in ../examples/policies/*.toml; do cp "$p" "corpus/config/seed-example-$(basename "$p")"; done
echo "seeds: $(find corpus -name 'seed-*' | wc -l) files, $(du -sh corpus | cut -f1) in fuzz/corpus"
