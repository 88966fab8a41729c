/**
 * One request in flight (`PendingCall`), a streaming request (`ResultStream`) and the awaitable
 * start of a stream (`PendingStream`).
 *
 * The client's reader hands a call the payloads of the notifications `[msgid, payload]` that
 * precede its response, synchronously and in order, so a stream always sees all its chunks
 * before its end. A call ends once: with the daemon's answer, a timeout (client side, after
 * sending `$/cancel`), or the connection's end.
 */

import { Cancelled, CallTimeout, SidecarError } from "./errors.js";
import type { AnyMap, StreamOptions, TimeoutKind } from "./types.js";

/** What a call needs from its connection. */
export interface CallHost {
  sendCancel(msgid: number): void;
}

/** Receives a call's chunks and its end (set by `ResultStream`). */
export interface CallObserver {
  chunk(payload: unknown): void;
  /** Called once, synchronously, before the call's promise settles. `answered`: by the daemon. */
  end(error: SidecarError | null, result: unknown, answered: boolean): void;
}

/** Whether an abort reason is a timeout (`AbortSignal.timeout()` aborts with a `TimeoutError`). */
export function isTimeoutReason(reason: unknown): boolean {
  return reason !== null && typeof reason === "object" && (reason as { name?: unknown }).name === "TimeoutError";
}

/** A request sent and not necessarily answered yet; await it (or `.promise`) for the result. */
export class PendingCall<T> implements PromiseLike<T> {
  readonly promise: Promise<T>;
  /** Receives stream chunks and the end. */
  observer?: CallObserver;
  private resolveFn!: (value: T) => void;
  private rejectFn!: (error: SidecarError) => void;
  private settled = false;
  private cancelSent = false;
  private gotChunk = false;
  private timers = new Map<TimeoutKind, ReturnType<typeof setTimeout>>();
  private cleanups: (() => void)[] = [];
  private readonly idleMs: number | undefined;

  constructor(
    private readonly host: CallHost,
    readonly msgid: number,
    readonly method: string,
    opts?: StreamOptions,
  ) {
    this.promise = new Promise<T>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
    // A caller that never awaits a cancelled call must not crash the process.
    this.promise.catch(() => undefined);
    const signal = opts?.signal;
    if (signal && !signal.aborted) {
      const onAbort = (): void => this.abort(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      this.cleanups.push(() => signal.removeEventListener("abort", onAbort));
    }
    this.idleMs = positive(opts?.idleTimeoutMs, "idleTimeoutMs");
    this.arm("total", positive(opts?.timeoutMs, "timeoutMs"));
    this.arm("first_chunk", positive(opts?.firstChunkTimeoutMs, "firstChunkTimeoutMs"));
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

  /**
   * The call's signal fired (or had fired before the call was sent: then nothing was sent). A
   * timeout (`AbortSignal.timeout()`) ends it at once with `CallTimeout`; any other abort asks the
   * daemon to cancel, and the daemon's `Cancelled` (with what it billed) ends it.
   */
  abort(reason: unknown, sent = true): void {
    if (isTimeoutReason(reason)) {
      this.expire("signal", undefined, sent);
    } else if (sent) {
      this.cancel();
    } else {
      this.finish(new Cancelled(`${this.method} was aborted before it was sent`, {}), undefined, false);
    }
  }

  /** A stream notification for this call (ignored once the call has ended). */
  chunk(payload: unknown): void {
    if (this.settled) return;
    if (!this.gotChunk) {
      this.gotChunk = true;
      this.disarm("first_chunk");
    }
    this.arm("idle", this.idleMs);
    this.observer?.chunk(payload);
  }

  /** The daemon's response. */
  answer(error: SidecarError | null, result: unknown): void {
    this.finish(error, result, true);
  }

  /** The call failed on this side (the connection ended). */
  fail(error: SidecarError): void {
    this.finish(error, undefined, false);
  }

  private arm(kind: TimeoutKind, ms: number | undefined): void {
    if (ms === undefined || this.settled) return;
    this.disarm(kind);
    this.timers.set(
      kind,
      setTimeout(() => this.expire(kind, ms, true), ms),
    );
  }

  private disarm(kind: TimeoutKind): void {
    const t = this.timers.get(kind);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(kind);
  }

  private expire(kind: TimeoutKind, ms: number | undefined, sent: boolean): void {
    if (this.settled) return;
    if (sent) this.cancel();
    const what = `${this.method} (msgid ${this.msgid})`;
    const message = {
      total: `${what} did not finish within ${ms} ms`,
      first_chunk: `${what} sent no first chunk within ${ms} ms`,
      idle: `${what} sent no chunk for ${ms} ms`,
      signal: `${what} timed out (its AbortSignal's timeout)`,
    }[kind];
    const data: AnyMap = { method: this.method, msgid: this.msgid, timeout: kind };
    if (ms !== undefined) data.timeout_ms = ms;
    this.finish(new CallTimeout(`${message}; it was cancelled on the daemon`, data), undefined, false);
  }

  private finish(error: SidecarError | null, result: unknown, answered: boolean): void {
    if (this.settled) return;
    this.settled = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const c of this.cleanups) c();
    this.cleanups = [];
    this.observer?.end(error, result, answered);
    if (error) this.rejectFn(error);
    else this.resolveFn(result as T);
  }
}

function positive(ms: number | undefined, name: string): number | undefined {
  if (ms === undefined) return undefined;
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    throw new TypeError(`${name} must be a finite number of milliseconds >= 0, not ${String(ms)}`);
  }
  return ms;
}

/** What `finalResult()` gives for a call this client cancelled: the daemon's account of it. */
export type CancelledOutcome<D = AnyMap> = D & { status: "cancelled" };

/**
 * A streaming call: `for await` its chunks, then read `.result` (set when it ends), or await
 * `.finalResult()`. Iteration throws the call's error (`CallTimeout`, `Cancelled` after
 * `cancel()` or an abort, the daemon's error). Breaking out of the loop, `close()`, `cancel()` or
 * aborting the call's signal sends `$/cancel`; `finalResult()` then resolves with the daemon's
 * account of the cancelled call (`status: "cancelled"`, the usage billed so far). Chunks are
 * buffered, so a slow reader loses nothing. Iterate once.
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
  private readonly outcomePromise: Promise<R | CancelledOutcome>;
  private readonly startedPromise: Promise<void>;
  private resolveStarted!: () => void;
  private rejectStarted!: (e: SidecarError) => void;

  constructor(private readonly call: PendingCall<R>) {
    this.startedPromise = new Promise<void>((resolve, reject) => {
      this.resolveStarted = resolve;
      this.rejectStarted = reject;
    });
    this.startedPromise.catch(() => undefined);
    let cancelledByDaemon: CancelledOutcome | undefined;
    call.observer = {
      chunk: (payload) => {
        this.resolveStarted();
        if (this.closed) return;
        this.queue.push(payload);
        this.poke();
      },
      end: (error, result, answered) => {
        this.ended = true;
        this.error = error;
        if (!error) {
          this.result = result as R;
          this.resolveStarted();
        } else {
          this.rejectStarted(error);
          if (answered && error.code === Cancelled.code) cancelledByDaemon = { ...error.data, status: "cancelled" };
        }
        this.poke();
      },
    };
    this.outcomePromise = call.promise.then(
      (r) => r,
      (e: SidecarError) => {
        if (cancelledByDaemon) return cancelledByDaemon;
        throw e;
      },
    );
    this.outcomePromise.catch(() => undefined);
  }

  get msgid(): number {
    return this.call.msgid;
  }

  /**
   * Resolves when the stream has started: its first chunk (of any kind) or its final answer has
   * arrived. Rejects with the error that ended it before that (a refusal, `CallTimeout`, ...).
   */
  started(): Promise<this> {
    return this.startedPromise.then(() => this);
  }

  /**
   * The final result (content, usage, cost ...) once the stream ends. For a call this client
   * cancelled (break, `close()`, `cancel()`, an abort) it resolves with the daemon's account of
   * it, `{status: "cancelled", ...}` (for chat: the usage billed so far); any other error
   * (a timeout, a refusal, a provider error, a lost connection) rejects.
   */
  finalResult(): Promise<R | CancelledOutcome> {
    return this.outcomePromise;
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

/**
 * A stream being started, as returned by `stream()` and `chat({stream: true})`. `await` it for
 * the stream: it resolves once the first chunk (or the final answer) has arrived, and rejects
 * with the error the daemon sent before that (a refusal such as `QuotaExceeded`,
 * `TierRequired`, `RateLimited`, `InvalidParams`), or `CallTimeout`. For code written before
 * that, it is itself iterable and forwards to the stream (errors then surface on iteration).
 */
export class PendingStream<C, R, S extends ResultStream<C, R> = ResultStream<C, R>> implements PromiseLike<S>, AsyncIterable<C> {
  constructor(
    /** The stream itself (usable before it has started). */
    readonly stream: S,
  ) {}

  then<R1 = S, R2 = never>(
    onfulfilled?: ((value: S) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.stream.started().then(onfulfilled, onrejected);
  }

  get msgid(): number {
    return this.stream.msgid;
  }

  /** The final result, once the stream has ended without error. */
  get result(): R | undefined {
    return this.stream.result;
  }

  finalResult(): ReturnType<S["finalResult"]> {
    return this.stream.finalResult() as ReturnType<S["finalResult"]>;
  }

  cancel(): void {
    this.stream.cancel();
  }

  close(): void {
    this.stream.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<C> {
    return this.stream[Symbol.asyncIterator]();
  }
}
