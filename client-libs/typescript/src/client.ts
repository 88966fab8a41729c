/**
 * The client: one Unix-socket connection to the daemon, any number of concurrent calls.
 *
 * A reader loop decodes the byte stream with @msgpack/msgpack's streaming decoder (messages are
 * back to back, no length prefix) and routes each message: responses to the waiting call by
 * msgid (answers arrive in completion order), stream notifications `[msgid, payload]` to that
 * call's `ResultStream`, `event` notifications to the matching `Subscription`s. When the
 * connection ends, every waiting call rejects with `ConnectionClosed`.
 */

import { createConnection, type Socket } from "node:net";
import { decodeMultiStream } from "@msgpack/msgpack";
import { abortedBeforeSend, PendingCall, ResultStream } from "./calls.js";
import { ChatStream } from "./chat.js";
import { socketPath } from "./discovery.js";
import { ConnectionClosed, ProtocolError, SidecarError, errorFromWire } from "./errors.js";
import { Methods, type ChatParams } from "./methods.js";
import { Subscription } from "./subscription.js";
import type { AnyMap, CallOptions, ChatResult, HelloResult, SidecarEvent } from "./types.js";
import * as wire from "./wire.js";

export interface ClientOptions {
  /** Socket path; default: `$LLM_SIDECAR_SOCK`, `$XDG_RUNTIME_DIR/llm-sidecar/sock`, `$TMPDIR/llm-sidecar-<uid>/sock`. */
  path?: string;
  /** Names the app with `daemon.hello` right after connecting. */
  app?: string;
  /** The app's version, sent with `app`. */
  appVersion?: string;
}

export class Client extends Methods {
  /** The answer to `daemon.hello` when the client was created with `app`. */
  helloResult: HelloResult | undefined = undefined;
  /** Resolves (never rejects) with the reason once the connection has ended. */
  readonly whenClosed: Promise<SidecarError>;
  private readonly pending = new Map<number, PendingCall<unknown>>();
  private readonly ids = new wire.MsgIds();
  private subs: Subscription[] = [];
  private closeReason: SidecarError | undefined = undefined;
  private resolveClosed!: (reason: SidecarError) => void;

  private constructor(
    private readonly socket: Socket,
    /** The socket path this client is connected to. */
    readonly path: string,
  ) {
    super();
    this.whenClosed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    socket.on("error", () => undefined); // surfaced by the reader loop
    void this.readLoop();
  }

  /**
   * Connects to the daemon (rejecting with `DaemonNotRunning` when nothing listens) and, given
   * `app`, names the app with `daemon.hello`. A string argument is the socket path.
   */
  static async connect(options: ClientOptions | string = {}): Promise<Client> {
    const opts = typeof options === "string" ? { path: options } : options;
    const path = socketPath(opts.path);
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection({ path });
      s.once("connect", () => {
        s.removeAllListeners("error");
        resolve(s);
      });
      s.once("error", (err: NodeJS.ErrnoException) => {
        s.destroy();
        reject(wire.connectError(path, err));
      });
    });
    const client = new Client(socket, path);
    if (opts.app !== undefined) {
      try {
        client.helloResult = await client.hello({ app: opts.app, version: opts.appVersion });
      } catch (e) {
        client.close();
        throw e;
      }
    }
    return client;
  }

  /** Whether the connection has ended. */
  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  /** Closes the connection; the daemon cancels whatever still runs on it. */
  close(): void {
    this.shutdown(new ConnectionClosed("the client closed the connection"));
    this.socket.destroy();
  }

  // ---- calls ----------------------------------------------------------------------------------

  /**
   * Sends a request and returns it at once: await it for the result, `.cancel()` to cancel.
   * `params`: an object is sent as the single map argument (undefined/null fields left out), an
   * array as the params array itself.
   */
  start<T = AnyMap>(method: string, params?: unknown, opts?: CallOptions): PendingCall<T> {
    return this.begin<T>(method, params, opts);
  }

  /** Calls any method; rejects with the daemon's error as its `SidecarError` subclass. */
  call<T = AnyMap>(method: string, params?: unknown, opts?: CallOptions): Promise<T> {
    try {
      return this.start<T>(method, params, opts).promise;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Starts a streaming request; the payloads of its notifications are the chunks. */
  stream<C = AnyMap, R = AnyMap>(method: string, params?: unknown, opts?: CallOptions): ResultStream<C, R> {
    return this.streamWith<R, ResultStream<C, R>>(method, params, opts, (call) => new ResultStream<C, R>(call));
  }

  private streamWith<R, S>(method: string, params: unknown, opts: CallOptions | undefined, make: (call: PendingCall<R>) => S): S {
    let stream: S | undefined;
    this.begin<R>(method, params, opts, (call) => {
      stream = make(call);
    });
    return stream as S;
  }

  /** Records a call (letting `attach` hook into it before anything can arrive) and sends it. */
  private begin<T>(
    method: string,
    params: unknown,
    opts: CallOptions | undefined,
    attach?: (call: PendingCall<T>) => void,
  ): PendingCall<T> {
    const array = wire.paramsArray(params);
    if (this.closeReason) {
      throw new ConnectionClosed(`the connection is closed (${this.closeReason.message})`);
    }
    const msgid = this.ids.allocate(this.pending);
    const call = new PendingCall<T>(this, msgid, method, opts);
    attach?.(call);
    if (opts?.signal?.aborted) {
      call.settle(abortedBeforeSend(method), undefined);
      return call;
    }
    this.pending.set(msgid, call as PendingCall<unknown>);
    this.socket.write(wire.packRequest(msgid, method, array));
    return call;
  }

  /**
   * `chat`: a completion via a route, alias or `provider/model`, with optional `tools`,
   * `tool_choice`, `parallel_tool_calls`, `response_format` and `reasoning`. With `stream: true`
   * returns a `ChatStream` (`for await` the text chunks, or `.deltas()` for typed text /
   * reasoning / tool-call deltas, then `.result`); otherwise the result.
   */
  chat(params: ChatParams & { stream: true }, opts?: CallOptions): ChatStream;
  chat(params: ChatParams & { stream?: false }, opts?: CallOptions): Promise<ChatResult>;
  chat(params: ChatParams, opts?: CallOptions): ChatStream | Promise<ChatResult>;
  chat(params: ChatParams, opts?: CallOptions): ChatStream | Promise<ChatResult> {
    if (params.stream) return this.streamWith<ChatResult, ChatStream>("chat", params, opts, (call) => new ChatStream(call));
    return this.call<ChatResult>("chat", params, opts);
  }

  // ---- events ---------------------------------------------------------------------------------

  /**
   * Subscribes to daemon events of these kinds ("*" for all). The `Subscription` emits
   * `"event"` and is an async iterable; `listener` is attached before any event can arrive.
   * Rejects with `InvalidParams` for an unknown kind.
   */
  async subscribe(kinds: string | string[] = "*", listener?: (event: SidecarEvent) => void): Promise<Subscription> {
    const list = typeof kinds === "string" ? [kinds] : [...kinds];
    // Registered before asking, so an event sent right after the answer is not missed.
    const sub = new Subscription(this, new Set(list));
    if (listener) sub.on("event", listener);
    this.subs.push(sub);
    try {
      const answered = await this.eventsSubscribe({ kinds: list });
      sub.kinds = wire.subscribedKinds(list, answered);
    } catch (e) {
      this.subs = this.subs.filter((s) => s !== sub);
      sub.end();
      throw e;
    }
    return sub;
  }

  /** @internal */
  async dropSubscription(sub: Subscription): Promise<void> {
    const i = this.subs.indexOf(sub);
    if (i < 0) return;
    this.subs.splice(i, 1);
    const drop = wire.kindsToDrop(
      sub.kinds,
      this.subs.map((s) => s.kinds),
    );
    if (this.closeReason || (drop !== undefined && drop.length === 0)) return;
    try {
      await this.eventsUnsubscribe(drop === undefined ? {} : { kinds: drop });
    } catch (e) {
      if (!(e instanceof ConnectionClosed)) throw e;
    }
  }

  /** @internal */
  sendCancel(msgid: number): void {
    if (!this.closeReason && !this.socket.destroyed) this.socket.write(wire.packCancel(msgid));
  }

  // ---- receiving ------------------------------------------------------------------------------

  private async readLoop(): Promise<void> {
    let reason: SidecarError = new ConnectionClosed("the daemon closed the connection");
    try {
      for await (const msg of decodeMultiStream(this.socket)) {
        this.dispatch(wire.parse(msg));
      }
    } catch (e) {
      if (e instanceof SidecarError) {
        reason = e;
      } else if (typeof (e as NodeJS.ErrnoException)?.code === "string") {
        reason = new ConnectionClosed(`connection lost: ${(e as Error).message}`);
      } else {
        reason = new ProtocolError(`the daemon sent invalid MessagePack: ${(e as Error)?.message ?? e}`);
      }
      this.socket.destroy();
    }
    this.shutdown(reason);
  }

  private dispatch(msg: wire.Message): void {
    if (msg.type === "response") {
      const call = this.pending.get(msg.msgid);
      if (!call) return;
      this.pending.delete(msg.msgid);
      call.settle(msg.error === null ? null : errorFromWire(msg.error), msg.result);
      return;
    }
    if (msg.method === "event") {
      const body = msg.params[0];
      if (body !== null && typeof body === "object" && !Array.isArray(body)) {
        for (const sub of [...this.subs]) sub.deliver(body as SidecarEvent);
      }
      return;
    }
    const msgid = wire.streamMsgid(msg.params);
    if (msgid !== undefined) this.pending.get(msgid)?.onChunk?.(msg.params[1]);
  }

  private shutdown(reason: SidecarError): void {
    if (this.closeReason) return;
    this.closeReason = reason;
    const pending = [...this.pending.values()];
    this.pending.clear();
    const subs = this.subs;
    this.subs = [];
    for (const call of pending) call.settle(new ConnectionClosed(`${call.method}: ${reason.message}`), undefined);
    for (const sub of subs) sub.end();
    this.resolveClosed(reason);
  }
}

/** Connects to the daemon (see `Client.connect`). */
export function connect(options: ClientOptions | string = {}): Promise<Client> {
  return Client.connect(options);
}


