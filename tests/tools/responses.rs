//! Tool loop tests for the responses adapter (filled in with the adapter's translation).
