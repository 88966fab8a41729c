/**
 * The directory of the installed package (the one holding package.json), where autostart looks
 * for a bundled daemon binary (`bin/<platform>-<arch>/llm-sidecar`).
 *
 * This source serves the CommonJS build (`dist/cjs/package-dir.js` is two levels below the
 * package). The ESM build cannot be written with the same source (`import.meta` does not compile
 * to CommonJS), so `scripts/mark-dist.mjs` replaces `dist/esm/package-dir.js` after the build
 * with the same value computed from `import.meta.url`.
 */

import { resolve } from "node:path";

export const packageDir: string | undefined = typeof __dirname === "string" ? resolve(__dirname, "..", "..") : undefined;
