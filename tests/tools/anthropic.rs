//! Tool loop tests for the anthropic adapter (filled in with the adapter's translation).
