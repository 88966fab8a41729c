/**
 * Where the daemon's socket is: the same rules the daemon uses (docs/protocol.md §1).
 * 1. an explicit path; 2. `$LLM_SIDECAR_SOCK`; 3. `$XDG_RUNTIME_DIR/llm-sidecar/sock`;
 * 4. `<temp dir>/llm-sidecar-<uid>/sock`, the temp dir being `$TMPDIR` or `/tmp` (as Rust's
 * `std::env::temp_dir`). Empty variables count as unset.
 */

import { join } from "node:path";

export function socketPath(explicit?: string | null, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit) return explicit;
  if (env.LLM_SIDECAR_SOCK) return env.LLM_SIDECAR_SOCK;
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, "llm-sidecar", "sock");
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  return join(env.TMPDIR || "/tmp", `llm-sidecar-${uid}`, "sock");
}
