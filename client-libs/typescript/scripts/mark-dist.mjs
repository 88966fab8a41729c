// Marks each build's module format, so Node loads dist/cjs as CommonJS and dist/esm as ESM
// whatever the "type" of the package that contains them.
import { writeFileSync } from "node:fs";

writeFileSync(new URL("../dist/cjs/package.json", import.meta.url), JSON.stringify({ type: "commonjs" }) + "\n");
writeFileSync(new URL("../dist/esm/package.json", import.meta.url), JSON.stringify({ type: "module" }) + "\n");
