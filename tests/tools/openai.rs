//! Tool loop tests for the openai adapter (filled in with the adapter's translation).
