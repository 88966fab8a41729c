// The typed results are honest: every field a result interface (src/types.ts) declares as always
// present is present in what the real daemon answers, recursively (nested objects, array
// elements), and nothing typed `number`/`string`/`boolean` comes back as another type. The
// interfaces are read from the published .d.ts with the TypeScript compiler API, so this test
// follows the typings without a copy of them.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import ts from "typescript";
import { Client } from "llm-sidecar";
import { LIB_DIR, MockProvider, daemonWithMock } from "./support.mjs";

const program = ts.createProgram([join(LIB_DIR, "dist", "esm", "index.d.ts")], { strict: true, types: ["node"] });
const checker = program.getTypeChecker();
const typesFile = program.getSourceFile(join(LIB_DIR, "dist", "esm", "types.d.ts"));

const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(typesFile));

function declared(name) {
  const sym = exported.find((s) => s.name === name);
  assert.ok(sym, `no type ${name} in types.d.ts`);
  return checker.getDeclaredTypeOfSymbol(sym);
}

/** Problems of `value` against `type` (empty: it fits). */
function mismatches(value, type, path) {
  const out = [];
  const nonNull = type.isUnion() ? type.types.filter((t) => !(t.flags & (ts.TypeFlags.Null | ts.TypeFlags.Undefined))) : [type];
  const nullable = nonNull.length !== (type.isUnion() ? type.types.length : 1);
  if (value === null || value === undefined) {
    if (!nullable && !(type.flags & ts.TypeFlags.Unknown) && !(type.flags & ts.TypeFlags.Any)) out.push(`${path} is ${value}, typed ${checker.typeToString(type)}`);
    return out;
  }
  if (nonNull.length !== 1) {
    // A union of literals or shapes: check the primitive kind when they all share one.
    const kinds = new Set(nonNull.map(primitive));
    if (kinds.size === 1 && !kinds.has(undefined) && typeof value !== [...kinds][0]) out.push(`${path}: ${JSON.stringify(value)} is not a ${[...kinds][0]}`);
    return out;
  }
  const t = nonNull[0];
  const prim = primitive(t);
  if (prim) {
    if (typeof value !== prim) out.push(`${path}: ${JSON.stringify(value)} is not a ${prim}`);
    return out;
  }
  if (checker.isArrayType(t)) {
    if (!Array.isArray(value)) return [`${path} is not an array`];
    const el = checker.getTypeArguments(t)[0];
    value.forEach((v, i) => out.push(...mismatches(v, el, `${path}[${i}]`)));
    return out;
  }
  if (t.flags & ts.TypeFlags.Object && !checker.getIndexInfosOfType(t).length) {
    if (typeof value !== "object") return [`${path} is not an object`];
    for (const p of checker.getPropertiesOfType(t)) {
      const optional = (p.flags & ts.SymbolFlags.Optional) !== 0;
      if (!(p.name in value)) {
        if (!optional) out.push(`${path}.${p.name} is missing`);
        continue;
      }
      out.push(...mismatches(value[p.name], checker.getTypeOfSymbol(p), `${path}.${p.name}`));
    }
  }
  return out;
}

function primitive(t) {
  if (t.flags & (ts.TypeFlags.Number | ts.TypeFlags.NumberLiteral)) return "number";
  if (t.flags & (ts.TypeFlags.String | ts.TypeFlags.StringLiteral)) return "string";
  if (t.flags & (ts.TypeFlags.Boolean | ts.TypeFlags.BooleanLiteral)) return "boolean";
  return undefined;
}

function fits(value, typeName) {
  assert.deepEqual(mismatches(value, declared(typeName), typeName), [], JSON.stringify(value));
}

let mock;
let daemon;
let c;
before(async () => {
  mock = await new MockProvider().listen();
  daemon = await daemonWithMock(mock, `[policy]\ndefault_tier = "free"\n[tiers.free]\nmonthly_tokens = 1000000\nmonthly_requests = 1000\nbyok = { allowed = true, counts_toward_quota = true }\n`);
  c = await Client.connect({ path: daemon.sock, app: "typed-results" });
});
after(async () => {
  c?.close();
  await daemon?.remove();
  await mock?.close();
});

describe("typed results match the daemon's answers", () => {
  test("the checker catches a missing or mistyped field", () => {
    assert.notDeepEqual(mismatches({ input: 1, output: 2, cached: 0, reasoning: 0, estimated: false }, declared("ChatUsage"), "u"), []);
    assert.notDeepEqual(mismatches({ input: "1", output: 2, cached: 0, cache_write: 0, reasoning: 0, estimated: false }, declared("ChatUsage"), "u"), []);
    assert.deepEqual(mismatches({ input: 1, output: 2, cached: 0, cache_write: 0, reasoning: 0, estimated: false }, declared("ChatUsage"), "u"), []);
  });

  test("daemon.*", async () => {
    fits(c.helloResult, "HelloResult");
    fits(await c.info(), "InfoResult");
    fits(await c.methods(), "MethodsResult");
    fits(await c.ping(), "PingResult");
    fits(await c.reload(), "ReloadResult");
  });

  test("chat, plain and streamed, completed and cancelled", async () => {
    const res = await c.chat({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    fits(res, "ChatResult");
    const s = await c.chat({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], stream: true });
    for await (const _ of s) void _;
    fits(await s.finalResult(), "ChatCompleted");
    mock.pace = { count: 50, gapMs: 30 };
    const s2 = await c.chat({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], stream: true });
    for await (const _ of s2) break;
    fits(await s2.finalResult(), "ChatCancelled");
    mock.reset();
    fits(await c.modelsList(), "ModelsListResult");
  });

  test("keys.*, vault.*, apps.*", async () => {
    const set = await c.keysSet({ provider: "openai", secret: "sk-test-abcdefgh1234", label: "work" });
    fits(set, "KeysSetResult");
    fits(await c.keysList(), "KeysListResult");
    fits(await c.vaultStatus(), "VaultStatus");
    fits(await c.vaultLock(), "VaultStatus");
    fits(await c.vaultUnlock(), "VaultStatus");
    fits(await c.keysRemove({ id: set.key.id }), "KeysRemoveResult");
    fits(await c.appsAdd({ name: "typed" }), "AppsAddResult");
    fits(await c.appsList(), "AppsListResult");
    fits(await c.appsRemove({ name: "typed" }), "AppsRemoveResult");
  });

  test("usage.*, quota.*, account.*, sync.*", async () => {
    fits(await c.usageRecord({ provider: "openai", model: "gpt-4o-mini", input_tokens: 10, output_tokens: 5 }), "UsageRecordResult");
    const recs = await c.usageRecords();
    assert.ok(recs.records.length >= 3);
    fits(recs, "UsageRecordsResult");
    fits(await c.usageSummary({ group_by: "model" }), "UsageSummary");
    fits(await c.usageSummary({ period: "day" }), "UsageSummary");
    const exp = await c.usageExport();
    fits(exp, "UsageExport");
    fits(await c.usageImport({ format: exp.format, version: exp.version, records: exp.records }), "UsageImportResult");
    const quota = await c.quotaStatus();
    assert.ok(quota.limits.length >= 2 && quota.byok, JSON.stringify(quota));
    fits(quota, "QuotaStatus");
    const ok = await c.quotaCheck({ model: "openai/gpt-4o-mini", estimated_tokens: 10 });
    assert.equal(ok.allowed, true);
    assert.ok(Array.isArray(ok.targets));
    const no = await c.quotaCheck({ model: "openai/gpt-4o-mini", estimated_tokens: 10_000_000 });
    assert.equal(no.allowed, false);
    assert.equal(no.error.code, "quota_exceeded");
    fits(no.error.data, "QuotaExceededData");
    fits(await c.accountStatus(), "AccountStatus");
    fits(await c.accountLogout(), "AccountLogoutResult");
    fits(await c.syncStatus(), "SyncStatus");
    fits(await c.syncDeadLetters(), "SyncDeadLettersResult");
    fits(await c.syncRequeue(), "SyncRequeueResult");
    fits(await c.usageClear({ force: true }), "UsageClearResult");
  });
});
