// An app written against the published typings, compiled with `tsc --strict` (tsconfig.test.json,
// no output; `npm run typecheck`): typed results, stream outcomes, deltas, timeouts, autostart,
// error data. The `@ts-expect-error` lines must stay errors.
import {
  CallTimeout,
  Cancelled,
  Client,
  DaemonStartFailed,
  QuotaExceeded,
  RateLimited,
  TierRequired,
  type ChatDelta,
  type ChatMessage,
  type ChatOutcome,
  type ChatStream,
  type ChatUsage,
  type QuotaLimit,
  type UsageRecord,
} from "llm-sidecar";

/** What an editor plugin shows under an answer. */
function usageLine(u: ChatUsage, cost_microusd: number): string {
  // Every usage field is always present: no `?.` or `?? 0` needed.
  const total: number = u.input + u.output;
  const cached: number = u.cached;
  const reasoning: number = u.reasoning;
  const estimated: boolean = u.estimated;
  return `${total} tokens (${cached} cached, ${reasoning} reasoning${estimated ? ", estimated" : ""}), ${(cost_microusd / 1e6).toFixed(4)} $`;
}

export async function editorPlugin(): Promise<void> {
  let c: Client;
  try {
    c = await Client.connect({ app: "editor", autostart: true, binary: "/opt/app/resources/llm-sidecar" });
  } catch (e) {
    if (e instanceof DaemonStartFailed) console.error(e.message, e.data.log);
    throw e;
  }
  if (c.autostarted?.spawned) console.log("started the daemon, pid", c.autostarted.pid, "log", c.autostarted.log);
  const messages: ChatMessage[] = [{ role: "user", content: "Explain this function" }];
  let stream: ChatStream;
  try {
    // Refusals reject here, before any chunk; timeouts too.
    stream = await c.chat({ model: "fast", messages, stream: true, reasoning: { effort: "low" } }, { firstChunkTimeoutMs: 10_000, idleTimeoutMs: 5_000, timeoutMs: 120_000 });
  } catch (e) {
    if (e instanceof QuotaExceeded) {
      const left: number = e.data.remaining;
      const until: string = e.data.period_end;
      console.log(`quota: ${left} ${e.data.metric} left until ${until}`);
    } else if (e instanceof TierRequired) {
      const tier: string | null = e.data.required_tier;
      console.log(`needs ${tier ?? "a higher tier"}: ${e.data.upgrade ?? ""}`);
    } else if (e instanceof RateLimited) {
      const wait: number = e.data.retry_after_ms;
      console.log(`retry in ${wait} ms`);
    } else if (e instanceof CallTimeout) {
      console.log(`timed out (${e.data.timeout}, ${e.data.timeout_ms ?? "?"} ms)`);
    }
    throw e;
  }
  let shown = 0;
  try {
    for await (const d of stream.deltas()) {
      const piece: ChatDelta = d;
      switch (piece.kind) {
        case "text":
          shown += piece.text.length;
          break;
        case "reasoning":
          void piece.text;
          break;
        case "tool_call": {
          const args: string = piece.arguments_delta;
          const index: number = piece.index;
          void args, index, piece.id, piece.name;
          break;
        }
      }
      if (shown > 2000) break; // the user scrolled away: stop paying for tokens
    }
  } catch (e) {
    if (!(e instanceof Cancelled) && !(e instanceof CallTimeout)) throw e;
  }
  const outcome: ChatOutcome = await stream.finalResult();
  if (outcome.status === "ok") {
    const fr = outcome.finish_reason;
    console.log(outcome.content, fr, outcome.tool_calls.length, outcome.ttft_ms ?? "-");
    messages.push(outcome.message);
  } else {
    const status: "cancelled" = outcome.status;
    // @ts-expect-error: a cancelled outcome has no tool_calls (narrow on status first)
    void outcome.tool_calls;
    console.log(status, "after", outcome.content.length, "chars", outcome.after_first_chunk);
  }
  console.log(usageLine(outcome.usage, outcome.cost_microusd));
  // An AbortSignal.timeout() is a CallTimeout, a plain abort a Cancelled.
  const ac = new AbortController();
  const p = c.chat({ model: "fast", messages }, { signal: AbortSignal.any([ac.signal, AbortSignal.timeout(30_000)]) });
  ac.abort();
  await p.catch((e: unknown) => void (e instanceof CallTimeout || e instanceof Cancelled));
  // @ts-expect-error: not a timeout option
  await c.chat({ model: "fast", messages }, { timeout: 5 });
  c.close();
}

export async function usagePanel(c: Client): Promise<string[]> {
  const quota = await c.quotaStatus();
  const tier: string | null = quota.tier;
  const limits: QuotaLimit[] = quota.limits;
  const lines = limits.map((l) => `${l.metric}: ${l.used}/${l.limit} (${l.remaining} left, ${l.reserved} reserved, ~${l.projected} at period end)`);
  if (quota.byok) lines.push(`own keys: ${quota.byok.used.tokens} tokens`);
  const check = await c.quotaCheck({ model: "smart", estimated_tokens: 2000 });
  if (check.allowed) lines.push(`smart via ${check.targets.join(", ")}`);
  else lines.push(`smart refused: ${check.error.code}`);
  let cursor: string | null = null;
  const records: UsageRecord[] = [];
  do {
    const page = await c.usageRecords({ limit: 100, ...(cursor ? { cursor } : {}) });
    records.push(...page.records);
    cursor = page.next_cursor;
  } while (cursor);
  const cancelled = records.filter((r) => r.status === "cancelled").reduce((n, r) => n + r.cost_microusd, 0);
  const summary = await c.usageSummary({ group_by: "model" });
  for (const g of summary.groups) lines.push(`${g.key}: ${g.total_tokens} tokens, ${g.cost_microusd} µ$`);
  const month: number = summary.projected_month_end.cost_microusd;
  const account = await c.accountStatus();
  const who: string | null = account.sub;
  const keys = await c.keysList();
  const last4: (string | null)[] = keys.keys.map((k) => k.last4);
  const vault = await c.vaultStatus();
  const locked: boolean = vault.locked;
  const models = await c.modelsList();
  const priced = models.providers.flatMap((p) => p.models.filter((m) => m.price !== null && m.allowed));
  const sync = await c.syncStatus();
  lines.push(`${tier} ${cancelled} ${month} ${who} ${last4.length} ${locked} ${priced.length} ${sync.state} ${sync.pending}`);
  // @ts-expect-error: a typo in a result field is an error now
  void quota.limts;
  return lines;
}
