// Compiled with `tsc -p tsconfig.test.json` (no output): the published typings let an app write
// these lines and reject the commented-out ones.
import { Client, QuotaExceeded, type ChatMessage, type ChatResult, type ChatStream, type ChatTool, type SidecarEvent } from "llm-sidecar";

export async function example(): Promise<void> {
  const c = await Client.connect({ app: "typed" });
  const info = await c.info();
  const protocol: number = info.protocol;
  const stream: ChatStream = await c.chat({ model: "fast", messages: [{ role: "user", content: "hi" }], stream: true });
  for await (const chunk of stream) {
    const delta: string = chunk.delta;
    void delta;
  }
  const usage = stream.result?.usage.output;
  const full: ChatResult = await c.chat({ model: "fast", messages: [], max_tokens: 5 });
  const ping = await c.ping({ delay_ms: 5 }, { signal: AbortSignal.timeout(1000) });
  const pong: boolean = ping.pong;
  const keys = await c.keysList();
  await c.usageSummary({ period: "month", group_by: "model", from: "2025-01-01" });
  const sub = await c.subscribe(["quota.threshold"], (e: SidecarEvent) => void e.kind);
  sub.on("event", (e) => void e.kind);
  for await (const e of sub) void e.kind;
  try {
    await c.quotaCheck({ model: "fast", estimated_tokens: 100 });
  } catch (e) {
    if (e instanceof QuotaExceeded) void e.data.period_end;
  }
  // @ts-expect-error: `model` is required
  await c.quotaCheck({ estimated_tokens: 1 });
  // @ts-expect-error: wrong type
  await c.ping({ delay_ms: "5" });
  // @ts-expect-error: unknown field
  await c.ping({ dealy_ms: 5 });
  void protocol, usage, full, pong, keys;
  c.close();
}

export async function toolLoop(c: Client): Promise<string> {
  const tools: ChatTool[] = [{ name: "get_weather", parameters: { type: "object" } }];
  const messages: ChatMessage[] = [
    { role: "user", content: [{ type: "text", text: "Weather here?" }, { type: "image", url: "https://x/y.png" }] },
  ];
  for (;;) {
    const res = await c.chat({ model: "fast", messages, tools, tool_choice: "auto", reasoning: { effort: "low" } });
    messages.push(res.message);
    if (res.tool_calls.length === 0) break;
    for (const call of res.tool_calls) {
      messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify(call.arguments) });
    }
  }
  let text = "";
  const stream = c.chat({ model: "fast", messages, stream: true, response_format: { type: "json_object" } });
  for await (const d of stream.deltas()) {
    if (d.kind === "text") text += d.text;
    else if (d.kind === "tool_call") text += `${d.index}${d.arguments_delta}`;
    // @ts-expect-error: a reasoning delta has no arguments_delta
    else void d.arguments_delta;
  }
  // @ts-expect-error: not a tool_choice
  await c.chat({ model: "fast", messages, tool_choice: "always" });
  // @ts-expect-error: an image needs url or data + media_type
  await c.chat({ model: "fast", messages: [{ role: "user", content: [{ type: "image", media_type: "image/png" }] }] });
  return text;
}
