#!/usr/bin/env node
// Copies a prebuilt llm-sidecar daemon binary into this package, at bin/<platform>-<arch>/llm-sidecar,
// where autostart finds it ("next to the package"); `npm pack` then includes it (package.json
// "files" lists bin/).
//
//   npm run bundle-binary -- [BINARY] [--platform P] [--arch A]   # default: $LLM_SIDECAR_BIN, this machine
//   npm run bundle-binary -- --clean                               # remove bin/
//
// --platform / --arch are Node's names (process.platform / process.arch: linux, darwin; x64, arm64):
// run it once per binary to ship several platforms in one package.
import { chmodSync, copyFileSync, existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  if (!v || v.startsWith("--")) throw new Error(`${name} needs a value`);
  args.splice(i, 2);
  return v;
};

try {
  if (args.includes("--clean")) {
    rmSync(join(pkg, "bin"), { recursive: true, force: true });
    console.log(`removed ${join(pkg, "bin")}`);
    process.exit(0);
  }
  const platform = opt("--platform", process.platform);
  const arch = opt("--arch", process.arch);
  const src = args[0] ?? process.env.LLM_SIDECAR_BIN;
  if (!src) throw new Error("give the daemon binary as an argument or in $LLM_SIDECAR_BIN");
  if (!existsSync(src) || !statSync(src).isFile()) throw new Error(`${src} is not a file`);
  const dest = join(pkg, "bin", `${platform}-${arch}`, "llm-sidecar");
  mkdirSync(dirname(dest), { recursive: true });
  copyFileSync(src, dest);
  chmodSync(dest, 0o755);
  console.log(`bundled ${src} as ${dest} (${(statSync(dest).size / 1e6).toFixed(1)} MB)`);
} catch (e) {
  console.error(`bundle-binary: ${e.message}`);
  process.exit(1);
}
