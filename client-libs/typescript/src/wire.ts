/** MessagePack-RPC messages as the daemon speaks them (docs/protocol.md §2-3). No sockets here. */

import { encode } from "@msgpack/msgpack";
import { DaemonNotRunning, ProtocolError, SidecarConnectionError } from "./errors.js";

export const REQUEST = 0;
export const RESPONSE = 1;
export const NOTIFICATION = 2;
export const CANCEL = "$/cancel";
const MAX_MSGID = 2 ** 32 - 1;

/**
 * The params array of a request: an object becomes `[object]` (the single map argument) with
 * undefined and null fields left out; an array is sent as is; undefined/null is `[]`.
 */
export function paramsArray(params: unknown): unknown[] {
  if (params === undefined || params === null) return [];
  if (Array.isArray(params)) return params;
  if (typeof params === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(params as Record<string, unknown>)) {
      if (v !== undefined && v !== null) out[k] = v;
    }
    return [out];
  }
  throw new TypeError(`params must be an object, an array or undefined, not ${typeof params}`);
}

export function packRequest(msgid: number, method: string, params: unknown[]): Uint8Array {
  return encode([REQUEST, msgid, method, params], { ignoreUndefined: true });
}

export function packCancel(msgid: number): Uint8Array {
  return encode([NOTIFICATION, CANCEL, [msgid]]);
}

export type Message =
  | { type: "response"; msgid: number; error: unknown; result: unknown }
  | { type: "notification"; method: string; params: unknown[] };

/** Classifies one decoded value; the daemon never sends requests, so those are protocol errors. */
export function parse(msg: unknown): Message {
  if (Array.isArray(msg)) {
    if (msg.length === 4 && msg[0] === RESPONSE && Number.isInteger(msg[1])) {
      return { type: "response", msgid: msg[1] as number, error: msg[2] ?? null, result: msg[3] ?? null };
    }
    if (msg.length === 3 && msg[0] === NOTIFICATION && typeof msg[1] === "string") {
      return { type: "notification", method: msg[1], params: Array.isArray(msg[2]) ? msg[2] : [msg[2]] };
    }
  }
  throw new ProtocolError(`unexpected message from the daemon: ${JSON.stringify(msg)?.slice(0, 200)}`);
}

/** The msgid a streaming notification `[msgid, payload]` belongs to, or undefined. */
export function streamMsgid(params: unknown[]): number | undefined {
  return Number.isInteger(params[0]) ? (params[0] as number) : undefined;
}

/** Allocates u32 msgids, skipping those still in use (the daemon rejects reused live ids). */
export class MsgIds {
  private next = 1;

  allocate(inUse: { has(id: number): boolean; size: number }): number {
    for (let i = 0; i <= inUse.size; i++) {
      const id = this.next;
      this.next = this.next >= MAX_MSGID ? 1 : this.next + 1;
      if (!inUse.has(id)) return id;
    }
    throw new SidecarConnectionError("no free msgid");
  }
}

/** A clear error for a failed connect, telling the user what to do. */
export function connectError(path: string, err: NodeJS.ErrnoException): SidecarConnectionError {
  if (err.code === "ENOENT" || err.code === "ECONNREFUSED" || err.code === "ENOTDIR") {
    return new DaemonNotRunning(
      `no llm-sidecar daemon is listening on ${path} (${err.code}); start it with \`llm-sidecar serve\` or enable its service`,
      { path },
    );
  }
  return new SidecarConnectionError(`cannot connect to the llm-sidecar daemon at ${path}: ${err.message}`, { path });
}

/** Whether a subscription for `wanted` kinds ("*" = all) receives an event of `kind`. */
export function matchKinds(wanted: ReadonlySet<string>, kind: unknown): boolean {
  return wanted.has("*") || (typeof kind === "string" && wanted.has(kind)) || kind === "events.lagged";
}

/** The concrete kinds a subscription holds: "*" expands to what the daemon answered. */
export function subscribedKinds(requested: string[], answered: { kinds?: unknown }): Set<string> {
  if (requested.includes("*")) {
    const kinds = Array.isArray(answered?.kinds) ? (answered.kinds as string[]) : [];
    return new Set([...kinds, "*"]);
  }
  return new Set(requested);
}

/**
 * Kinds to unsubscribe when a subscription closes: undefined means all of them (it was the last
 * one), an empty list means none (the others still need them all).
 */
export function kindsToDrop(mine: ReadonlySet<string>, others: ReadonlySet<string>[]): string[] | undefined {
  if (others.length === 0) return undefined;
  const keep = new Set<string>();
  for (const o of others) for (const k of o) keep.add(k);
  if (keep.has("*")) return [];
  return [...mine].filter((k) => k !== "*" && !keep.has(k)).sort();
}
