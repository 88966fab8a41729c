/**
 * Daemon events of some kinds, as an EventEmitter (`"event"`, `"close"`) and an async iterable.
 *
 * Events that arrive while nobody listens or iterates are kept (up to `BACKLOG` of them) and
 * handed to the first listener or iterator, so nothing between `subscribe()` and its use is lost.
 */

import { EventEmitter } from "node:events";
import { matchKinds } from "./wire.js";
import type { SidecarEvent } from "./types.js";

const BACKLOG = 10_000;

/** What a subscription needs from its connection. */
export interface SubscriptionHost {
  dropSubscription(sub: Subscription): Promise<void>;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
export interface Subscription {
  on(event: "event", listener: (event: SidecarEvent) => void): this;
  on(event: "close", listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: "event", listener: (event: SidecarEvent) => void): this;
  once(event: "close", listener: () => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off(event: "event", listener: (event: SidecarEvent) => void): this;
  off(event: "close", listener: () => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

interface Reader {
  queue: SidecarEvent[];
  wake: (() => void) | null;
}

export class Subscription extends EventEmitter implements AsyncIterable<SidecarEvent> {
  closed = false;
  private backlog: SidecarEvent[] = [];
  private readers = new Set<Reader>();

  constructor(
    private readonly host: SubscriptionHost,
    /** The kinds this subscription receives ("*" included when it asked for all). */
    public kinds: ReadonlySet<string>,
  ) {
    super();
    this.on("newListener", (name: string) => {
      if (name === "event" && this.backlog.length > 0) {
        const backlog = this.backlog;
        this.backlog = [];
        queueMicrotask(() => backlog.forEach((e) => this.emit("event", e)));
      }
    });
  }

  /** Unsubscribes the kinds no other subscription of this client still needs. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.end();
    await this.host.dropSubscription(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<SidecarEvent> {
    const reader: Reader = { queue: this.backlog, wake: null };
    this.backlog = [];
    this.readers.add(reader);
    return {
      next: async (): Promise<IteratorResult<SidecarEvent>> => {
        for (;;) {
          if (reader.queue.length > 0) return { value: reader.queue.shift() as SidecarEvent, done: false };
          if (this.closed) return { value: undefined, done: true };
          await new Promise<void>((resolve) => {
            reader.wake = resolve;
          });
        }
      },
      return: async (): Promise<IteratorResult<SidecarEvent>> => {
        this.readers.delete(reader);
        return { value: undefined, done: true };
      },
    };
  }

  /** Called by the client for every `event` notification. */
  deliver(event: SidecarEvent): void {
    if (this.closed || !matchKinds(this.kinds, event.kind)) return;
    for (const r of this.readers) {
      r.queue.push(event);
      wakeUp(r);
    }
    if (this.listenerCount("event") > 0) {
      this.emit("event", event);
    } else if (this.readers.size === 0) {
      if (this.backlog.length >= BACKLOG) this.backlog.shift();
      this.backlog.push(event);
    }
  }

  /** Called when the subscription or its connection ends. */
  end(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.readers) wakeUp(r);
    this.emit("close");
  }
}

function wakeUp(r: Reader): void {
  const wake = r.wake;
  r.wake = null;
  wake?.();
}
