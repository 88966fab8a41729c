//! Tool loop tests for the ollama adapter (filled in with the adapter's translation).
