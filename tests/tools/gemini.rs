//! Tool loop tests for the gemini adapter (filled in with the adapter's translation).
