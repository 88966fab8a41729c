/**
 * Streaming `chat`: a `ResultStream` whose plain iteration yields the text chunks (as before
 * tools and reasoning existed) and whose `deltas()` yields every chunk as a typed `ChatDelta`.
 */

import { PendingStream, ResultStream } from "./calls.js";
import type { ChatCancelled, ChatDelta, ChatOutcome, ChatResult, TextChunk, ToolCallChunk, ToolCallDelta } from "./types.js";

function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * The typed delta of one `chat.chunk` payload (`{delta | reasoning_delta | tool_call, seq}`);
 * undefined for a payload of a kind this library does not know.
 */
export function chatDelta(payload: unknown): ChatDelta | undefined {
  if (!isMap(payload)) return undefined;
  const seq = typeof payload.seq === "number" ? payload.seq : undefined;
  if (typeof payload.delta === "string") return { kind: "text", text: payload.delta, seq };
  if (typeof payload.reasoning_delta === "string") return { kind: "reasoning", text: payload.reasoning_delta, seq };
  if (isMap(payload.tool_call)) {
    const tc = payload.tool_call as Partial<ToolCallChunk>;
    const d: ToolCallDelta = {
      kind: "tool_call",
      index: typeof tc.index === "number" ? tc.index : 0,
      arguments_delta: typeof tc.arguments_delta === "string" ? tc.arguments_delta : "",
      seq,
    };
    if (typeof tc.id === "string") d.id = tc.id;
    if (typeof tc.name === "string") d.name = tc.name;
    return d;
  }
  return undefined;
}

/**
 * A streaming `chat` call. `for await (const chunk of stream)` yields the text chunks
 * `{delta, seq}` only; `for await (const d of stream.deltas())` yields every chunk typed
 * (`d.kind`: `"text"`, `"reasoning"`, `"tool_call"`). Either way `.result` then holds the
 * assembled answer (content, message, tool_calls with parsed arguments, reasoning, usage, ...).
 * Both views read the same chunks: use one per stream.
 *
 * `finalResult()` resolves with a `ChatOutcome`: the result with `status: "ok"`, or, after a
 * break, `close()`, `cancel()` or an abort, `status: "cancelled"` with the usage and cost billed
 * so far and the text received (narrow on `status`).
 */
export class ChatStream extends ResultStream<TextChunk, ChatResult> {
  override [Symbol.asyncIterator](): AsyncIterator<TextChunk> {
    return this.iterate((p) => (isMap(p) && typeof p.delta === "string" ? (p as unknown as TextChunk) : undefined));
  }

  /** Every chunk as a typed delta: text, reasoning and tool-call pieces, in order. */
  deltas(): AsyncIterable<ChatDelta> {
    return { [Symbol.asyncIterator]: () => this.iterate(chatDelta) };
  }

  override finalResult(): Promise<ChatOutcome> {
    return super
      .finalResult()
      .then((r): ChatOutcome => ("status" in r && r.status === "cancelled" ? (r as unknown as ChatCancelled) : { ...(r as ChatResult), status: "ok" }));
  }
}

/**
 * `chat({stream: true})`: `await` it for the `ChatStream` (it resolves at the first chunk and
 * rejects with a refusal sent before it); also iterable itself, like the stream.
 */
export class PendingChatStream extends PendingStream<TextChunk, ChatResult, ChatStream> {
  /** Every chunk as a typed delta (see `ChatStream.deltas`). */
  deltas(): AsyncIterable<ChatDelta> {
    return this.stream.deltas();
  }
}
