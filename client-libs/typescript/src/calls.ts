/**
 * One request in flight (`PendingCall`) and a streaming request (`ResultStream`).
 *
 * The client's reader settles a call when its response arrives and hands a streaming call the
 * payloads of the notifications `[msgid, payload]` that precede it, synchronously and in order,
 * so a stream always sees all its chunks before its end.
 */

import { Cancelled, CallTimeout, SidecarError } from "./errors.js";
import type { CallOptions } from "./types.js";

/** What a call needs from its connection. */
export interface CallHost {
  sendCancel(msgid: number): void;
}

/** A request sent and not necessarily answered yet; await it (or `.promise`) for the result. */
export class PendingCall<T> implements PromiseLike<T> {
  readonly promise: Promise<T>;
  private resolveFn!: (value: T) => void;
  private rejectFn!: (error: SidecarError) => void;
  private settled = false;
  private cancelSent = false;
  private cleanups: (() => void)[] = [];
  /** Receives stream chunks (set by `ResultStream`). */
  onChunk?: (payload: unknown) => void;
  /** Called synchronously when the response arrives, before the promise settles. */
  onSettle?: (error: SidecarError | null, result: unknown) => void;

  constructor(
    private readonly host: CallHost,
    readonly msgid: number,
    readonly method: string,
    opts?: CallOptions,
  ) {
    this.promise = new Promise<T>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
    // A caller that never awaits a cancelled call must not crash the process.
    this.promise.catch(() => undefined);
    const signal = opts?.signal;
    if (signal) {
      const onAbort = (): void => this.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      this.cleanups.push(() => signal.removeEventListener("abort", onAbort));
    }
    if (opts?.timeoutMs !== undefined) {
      const ms = opts.timeoutMs;
      const timer = setTimeout(() => {
        this.cancel();
        this.finish(new CallTimeout(`${method} (msgid ${msgid}) did not answer within ${ms} ms`), undefined);
      }, ms);
      this.cleanups.push(() => clearTimeout(timer));
    }
  }

  then<R1 = T, R2 = never>(
    onfulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.promise.then(onfulfilled, onrejected);
  }

  /** Whether the answer (or a failure) has arrived. */
  get done(): boolean {
    return this.settled;
  }

  /** Asks the daemon to cancel the request (`$/cancel`); it then rejects with `Cancelled`. */
  cancel(): void {
    if (!this.settled && !this.cancelSent) {
      this.cancelSent = true;
      this.host.sendCancel(this.msgid);
    }
  }

  /** Called by the client when the response arrives or the connection ends. */
  settle(error: SidecarError | null, result: unknown): void {
    this.onSettle?.(error, result);
    this.finish(error, result);
  }

  private finish(error: SidecarError | null, result: unknown): void {
    if (this.settled) return;
    this.settled = true;
    for (const c of this.cleanups) c();
    this.cleanups = [];
    if (error) this.rejectFn(error);
    else this.resolveFn(result as T);
  }
}

/**
 * A streaming call: `for await` its chunks, then read `.result` (set when it ends), or await
 * `.finalResult()`. Iteration throws the call's error (e.g. `Cancelled` with the usage billed so
 * far in `.data`). Breaking out of the loop, `close()`, `cancel()` or aborting the call's signal
 * sends `$/cancel`. Chunks are buffered, so a slow reader loses nothing. Iterate once.
 */
export class ResultStream<C, R> implements AsyncIterable<C> {
  /** The final result, once the stream has ended without error. */
  result: R | undefined = undefined;
  private readonly queue: unknown[] = [];
  private ended = false;
  private closed = false;
  private error: SidecarError | null = null;
  private errorThrown = false;
  private wake: (() => void) | null = null;

  constructor(private readonly call: PendingCall<R>) {
    call.onChunk = (payload) => {
      if (this.closed) return;
      this.queue.push(payload);
      this.poke();
    };
    call.onSettle = (error, result) => {
      this.ended = true;
      this.error = error;
      if (!error) this.result = result as R;
      this.poke();
    };
  }

  get msgid(): number {
    return this.call.msgid;
  }

  /** The final result (content, usage, cost ...) once the stream ends; rejects with its error. */
  finalResult(): Promise<R> {
    return this.call.promise;
  }

  /** Cancels the request on the daemon; iteration then ends with `Cancelled`. */
  cancel(): void {
    this.call.cancel();
  }

  /** Cancels the request if it has not finished; iteration ends without error. */
  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.queue.length = 0;
      this.call.cancel();
      this.poke();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<C> {
    return this.iterate((payload) => payload as C);
  }

  /**
   * An iterator over the chunks as `pick` maps them; chunks it maps to undefined are skipped.
   * Subclasses use it for typed views; all views share one queue (each chunk is seen once).
   */
  protected iterate<X>(pick: (payload: unknown) => X | undefined): AsyncIterator<X> {
    return {
      next: async (): Promise<IteratorResult<X>> => {
        for (;;) {
          const raw = await this.next();
          if (raw.done) return { value: undefined, done: true };
          const value = pick(raw.value);
          if (value !== undefined) return { value, done: false };
        }
      },
      return: async (): Promise<IteratorResult<X>> => {
        if (!this.ended) this.close();
        return { value: undefined, done: true };
      },
    };
  }

  private async next(): Promise<IteratorResult<unknown>> {
    for (;;) {
      if (this.closed) return { value: undefined, done: true };
      if (this.queue.length > 0) return { value: this.queue.shift(), done: false };
      if (this.ended) {
        if (this.error && !this.errorThrown) {
          this.errorThrown = true;
          throw this.error;
        }
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

/** A `Cancelled` for a call whose signal was aborted before it was sent. */
export function abortedBeforeSend(method: string): Cancelled {
  return new Cancelled(`${method} was aborted before it was sent`, {});
}
