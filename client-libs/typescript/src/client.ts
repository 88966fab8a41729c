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
import { ensureDaemon, type AutostartOptions, type AutostartResult } from "./autostart.js";
import { PendingCall, PendingStream, ResultStream } from "./calls.js";
import { ChatStream, PendingChatStream } from "./chat.js";
import { socketPath } from "./discovery.js";
import { ConnectionClosed, DaemonNotRunning, ProtocolError, SidecarError, errorFromWire } from "./errors.js";
import type * as M from "./methods.js";
import { Methods, type ChatParams } from "./methods.js";
import { Subscription } from "./subscription.js";
import type * as T from "./types.js";
import type { AnyMap, CallOptions, ChatResult, HelloResult, SidecarEvent, StreamOptions } from "./types.js";
import * as wire from "./wire.js";

export interface ClientOptions {
  /** Socket path; default: `$LLM_SIDECAR_SOCK`, `$XDG_RUNTIME_DIR/llm-sidecar/sock`, `$TMPDIR/llm-sidecar-<uid>/sock`. */
  path?: string;
  /** Names the app with `daemon.hello` right after connecting. */
  app?: string;
  /** The app's version, sent with `app`. */
  appVersion?: string;
  /**
   * When no daemon answers on the socket, start one (`llm-sidecar serve`, detached: it outlives
   * the app) and wait for it; `true` or the options (binary, dataDir, ...). See the README.
   */
  autostart?: boolean | AutostartOptions;
  /** Shorthand for `autostart: { binary }`: the daemon binary autostart runs. */
  binary?: string;
}

export class Client extends Methods {
  /** The answer to `daemon.hello` when the client was created with `app`. */
  helloResult: HelloResult | undefined = undefined;
  /** What autostart did, when this client started (or waited for) the daemon. */
  autostarted: AutostartResult | undefined = undefined;
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
   * Connects to the daemon (rejecting with `DaemonNotRunning` when nothing listens, or with
   * `autostart` starting it first) and, given `app`, names the app with `daemon.hello`. A string
   * argument is the socket path.
   */
  static async connect(options: ClientOptions | string = {}): Promise<Client> {
    const opts: ClientOptions = typeof options === "string" ? { path: options } : options;
    const path = socketPath(opts.path);
    let socket: Socket;
    let autostarted: AutostartResult | undefined;
    try {
      socket = await openSocket(path);
    } catch (e) {
      if (!(e instanceof DaemonNotRunning) || !opts.autostart) throw e;
      const auto: AutostartOptions = { ...(typeof opts.autostart === "object" ? opts.autostart : {}) };
      if (opts.binary !== undefined && auto.binary === undefined) auto.binary = opts.binary;
      autostarted = await ensureDaemon(path, auto);
      socket = await openSocket(path);
    }
    const client = new Client(socket, path);
    client.autostarted = autostarted;
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

  /**
   * Starts a streaming request; the payloads of its notifications are the chunks. `await` it for
   * the stream (resolves at the first chunk, rejects with an error sent before it).
   */
  stream<C = AnyMap, R = AnyMap>(method: string, params?: unknown, opts?: StreamOptions): PendingStream<C, R> {
    return new PendingStream(this.streamWith<R, ResultStream<C, R>>(method, params, opts, (call) => new ResultStream<C, R>(call)));
  }

  private streamWith<R, S>(method: string, params: unknown, opts: StreamOptions | undefined, make: (call: PendingCall<R>) => S): S {
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
    opts: StreamOptions | undefined,
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
      call.abort(opts.signal.reason, false);
      return call;
    }
    this.pending.set(msgid, call as PendingCall<unknown>);
    this.socket.write(wire.packRequest(msgid, method, array));
    return call;
  }

  /**
   * `chat`: a completion via a route, alias or `provider/model`, with optional `tools`,
   * `tool_choice`, `parallel_tool_calls`, `response_format` and `reasoning`. Without `stream`:
   * the result. With `stream: true`: `await` it for a `ChatStream` — it resolves when the first
   * chunk arrives and rejects with a refusal sent before it (`QuotaExceeded`, `TierRequired`,
   * `RateLimited`, `InvalidParams`, ...) or `CallTimeout` — then `for await` the text chunks (or
   * `.deltas()` for typed text / reasoning / tool-call deltas) and read `.result` or
   * `await stream.finalResult()`. Stream timeouts: `StreamOptions`.
   */
  chat(params: ChatParams & { stream: true }, opts?: StreamOptions): PendingChatStream;
  chat(params: ChatParams & { stream?: false }, opts?: CallOptions): Promise<ChatResult>;
  chat(params: ChatParams, opts?: StreamOptions): PendingChatStream | Promise<ChatResult>;
  chat(params: ChatParams, opts?: StreamOptions): PendingChatStream | Promise<ChatResult> {
    if (params.stream) {
      return new PendingChatStream(this.streamWith<ChatResult, ChatStream>("chat", params, opts, (call) => new ChatStream(call)));
    }
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
      call.answer(msg.error === null ? null : errorFromWire(msg.error), msg.result);
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
    if (msgid !== undefined) this.pending.get(msgid)?.chunk(msg.params[1]);
  }

  private shutdown(reason: SidecarError): void {
    if (this.closeReason) return;
    this.closeReason = reason;
    const pending = [...this.pending.values()];
    this.pending.clear();
    const subs = this.subs;
    this.subs = [];
    for (const call of pending) call.fail(new ConnectionClosed(`${call.method}: ${reason.message}`));
    for (const sub of subs) sub.end();
    this.resolveClosed(reason);
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
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
}

/**
 * The wrappers whose results the generated `Methods` leaves as `AnyMap`, with their result types
 * (types.ts). Types only: the calls are `Methods`'.
 */
export interface Client {
  reload(params?: M.DaemonReloadParams, opts?: CallOptions): Promise<T.ReloadResult>;
  keysSet(params: M.KeysSetParams, opts?: CallOptions): Promise<T.KeysSetResult>;
  keysList(params?: M.KeysListParams, opts?: CallOptions): Promise<T.KeysListResult>;
  keysRemove(params: M.KeysRemoveParams, opts?: CallOptions): Promise<T.KeysRemoveResult>;
  keysTest(params: M.KeysTestParams, opts?: CallOptions): Promise<T.KeysTestResult>;
  appsAdd(params: M.AppsAddParams, opts?: CallOptions): Promise<T.AppsAddResult>;
  appsList(params?: M.AppsListParams, opts?: CallOptions): Promise<T.AppsListResult>;
  appsRemove(params: M.AppsRemoveParams, opts?: CallOptions): Promise<T.AppsRemoveResult>;
  vaultStatus(params?: M.VaultStatusParams, opts?: CallOptions): Promise<T.VaultStatus>;
  vaultUnlock(params?: M.VaultUnlockParams, opts?: CallOptions): Promise<T.VaultStatus>;
  vaultLock(params?: M.VaultLockParams, opts?: CallOptions): Promise<T.VaultStatus>;
  chatCancel(params: M.ChatCancelParams, opts?: CallOptions): Promise<T.ChatCancelResult>;
  modelsList(params?: M.ModelsListParams, opts?: CallOptions): Promise<T.ModelsListResult>;
  usageRecord(params: M.UsageRecordParams, opts?: CallOptions): Promise<T.UsageRecordResult>;
  usageSummary(params?: M.UsageSummaryParams, opts?: CallOptions): Promise<T.UsageSummary>;
  usageRecords(params?: M.UsageRecordsParams, opts?: CallOptions): Promise<T.UsageRecordsResult>;
  usageExport(params?: M.UsageExportParams, opts?: CallOptions): Promise<T.UsageExport>;
  usageImport(params: M.UsageImportParams, opts?: CallOptions): Promise<T.UsageImportResult>;
  usageClear(params?: M.UsageClearParams, opts?: CallOptions): Promise<T.UsageClearResult>;
  syncStatus(params?: M.SyncStatusParams, opts?: CallOptions): Promise<T.SyncStatus>;
  syncNow(params?: M.SyncNowParams, opts?: CallOptions): Promise<T.SyncNowResult>;
  syncDeadLetters(params?: M.SyncDeadLettersParams, opts?: CallOptions): Promise<T.SyncDeadLettersResult>;
  syncRequeue(params?: M.SyncRequeueParams, opts?: CallOptions): Promise<T.SyncRequeueResult>;
  quotaStatus(params?: M.QuotaStatusParams, opts?: CallOptions): Promise<T.QuotaStatus>;
  quotaCheck(params: M.QuotaCheckParams, opts?: CallOptions): Promise<T.QuotaCheckResult>;
  accountLogin(params: M.AccountLoginParams, opts?: CallOptions): Promise<T.AccountStatus>;
  accountLogout(params?: M.AccountLogoutParams, opts?: CallOptions): Promise<T.AccountLogoutResult>;
  accountStatus(params?: M.AccountStatusParams, opts?: CallOptions): Promise<T.AccountStatus>;
  accountRefresh(params?: M.AccountRefreshParams, opts?: CallOptions): Promise<T.AccountStatus>;
  accountCheckoutUrl(params?: M.AccountCheckoutUrlParams, opts?: CallOptions): Promise<T.UrlResult>;
  accountPortalUrl(params?: M.AccountPortalUrlParams, opts?: CallOptions): Promise<T.UrlResult>;
}

/** Connects to the daemon (see `Client.connect`). */
export function connect(options: ClientOptions | string = {}): Promise<Client> {
  return Client.connect(options);
}


