// After `tsc`: marks each build's module format, so Node loads dist/cjs as CommonJS and dist/esm
// as ESM whatever the "type" of the package that contains them; and gives the ESM build its
// package directory from import.meta.url (see src/package-dir.ts).
import { writeFileSync } from "node:fs";

writeFileSync(new URL("../dist/cjs/package.json", import.meta.url), JSON.stringify({ type: "commonjs" }) + "\n");
writeFileSync(new URL("../dist/esm/package.json", import.meta.url), JSON.stringify({ type: "module" }) + "\n");
writeFileSync(
  new URL("../dist/esm/package-dir.js", import.meta.url),
  `// Written by scripts/mark-dist.mjs (see src/package-dir.ts).
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";
export const packageDir = resolve(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
`,
);
