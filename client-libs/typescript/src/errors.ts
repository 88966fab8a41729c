/**
 * Errors: one class per stable error code of the daemon, plus client-side connection errors.
 * Every error is a `SidecarError` with `code`, `message` and `data` (always an object); branch on
 * the class (or `code`) and read details from `data`. Unknown codes become a plain `SidecarError`.
 */

import type { AnyMap, ChatFailureData, QuotaExceededData, RateLimitedData, TierRequiredData, TimeoutKind } from "./types.js";

export class SidecarError extends Error {
  /** The default code of this class; instances carry the code actually received. */
  static readonly code: string = "error";
  readonly code: string;
  readonly data: AnyMap;

  constructor(message: string, data?: AnyMap | null, code?: string) {
    super(message);
    this.name = new.target.name;
    this.code = code ?? (new.target as typeof SidecarError).code;
    this.data = { ...(data ?? {}) };
  }
}

/** Not a valid request (shape, reused msgid). */
export class InvalidRequest extends SidecarError {
  static override readonly code = "invalid_request";
}
/** No such method; `data.method` names it. */
export class MethodNotFound extends SidecarError {
  static override readonly code = "method_not_found";
}
/** Params missing, of the wrong type, unknown or out of range. */
export class InvalidParams extends SidecarError {
  static override readonly code = "invalid_params";
}
/** Credentials rejected (wrong passphrase, bad entitlement token). */
export class Unauthorized extends SidecarError {
  static override readonly code = "unauthorized";
}
/** The vault must be unlocked first. */
export class VaultLocked extends SidecarError {
  static override readonly code = "vault_locked";
}
/** No key for the provider (`data.provider`). */
export class KeyMissing extends SidecarError {
  static override readonly code = "key_missing";
}
/** The current tier does not allow this; `data.required_tier` would. */
export class TierRequired extends SidecarError {
  static override readonly code = "tier_required";
  declare readonly data: TierRequiredData & AnyMap;
}
/** A quota is used up: `data` has limit, used, remaining, period_start, period_end, metric. */
export class QuotaExceeded extends SidecarError {
  static override readonly code = "quota_exceeded";
  declare readonly data: QuotaExceededData & AnyMap;
}
/** Too many requests; retry after `data.retry_after_ms`. */
export class RateLimited extends SidecarError {
  static override readonly code = "rate_limited";
  declare readonly data: RateLimitedData & AnyMap;
}
/** The provider failed after retries/fallbacks: `data` has provider, status, attempts, usage billed. */
export class ProviderError extends SidecarError {
  static override readonly code = "provider_error";
  declare readonly data: Partial<ChatFailureData> & AnyMap;
}
/**
 * The request was cancelled; for chat, `data` holds the usage billed so far and the text received
 * (empty when the call was aborted before it was sent).
 */
export class Cancelled extends SidecarError {
  static override readonly code = "cancelled";
  declare readonly data: Partial<ChatFailureData> & AnyMap;
}
/** The daemon is stopping. */
export class ShuttingDown extends SidecarError {
  static override readonly code = "shutting_down";
}
/** `daemon.reload` found errors in config.toml (`data.errors`); the old config stays. */
export class ConfigInvalid extends SidecarError {
  static override readonly code = "config_invalid";
}
/** A bug or unexpected failure in the daemon (it is in the daemon's log). */
export class Internal extends SidecarError {
  static override readonly code = "internal";
}

/** The connection to the daemon failed or was lost (client side). */
export class SidecarConnectionError extends SidecarError {
  static override readonly code: string = "connection_error";
}
/** Nothing listens on the socket: start the daemon with `llm-sidecar serve`. */
export class DaemonNotRunning extends SidecarConnectionError {
  static override readonly code = "daemon_not_running";
}
/** The connection closed while a call waited for its answer, or before it was sent. */
export class ConnectionClosed extends SidecarConnectionError {
  static override readonly code = "connection_closed";
}
/** The daemon sent something that is not MessagePack-RPC; the connection is closed. */
export class ProtocolError extends SidecarConnectionError {
  static override readonly code = "protocol_error";
}
/**
 * A call's timeout passed (`timeoutMs`, a stream's `firstChunkTimeoutMs` / `idleTimeoutMs`, or an
 * `AbortSignal.timeout()`); the request was cancelled on the daemon. `data.timeout` says which.
 */
export class CallTimeout extends SidecarError {
  static override readonly code = "timeout";
  declare readonly data: { method: string; msgid: number; timeout: TimeoutKind; timeout_ms?: number } & AnyMap;
}

/** Autostart could not start the daemon, or it did not listen in time; `data.log` is its log. */
export class DaemonStartFailed extends SidecarConnectionError {
  static override readonly code = "daemon_start_failed";
}

/** Error classes by the daemon's error codes. */
export const ERRORS_BY_CODE: Readonly<Record<string, typeof SidecarError>> = Object.fromEntries(
  [
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    Unauthorized,
    VaultLocked,
    KeyMissing,
    TierRequired,
    QuotaExceeded,
    RateLimited,
    ProviderError,
    Cancelled,
    ShuttingDown,
    ConfigInvalid,
    Internal,
  ].map((cls) => [cls.code, cls]),
);

/** The error for a response's error element (`{code, message, data}`, tolerating junk). */
export function errorFromWire(error: unknown): SidecarError {
  if (error !== null && typeof error === "object" && !Array.isArray(error)) {
    const e = error as AnyMap;
    const code = typeof e.code === "string" ? e.code : "error";
    const message = typeof e.message === "string" ? e.message : "";
    const data = e.data !== null && typeof e.data === "object" && !Array.isArray(e.data) ? (e.data as AnyMap) : {};
    const cls = Object.prototype.hasOwnProperty.call(ERRORS_BY_CODE, code) ? ERRORS_BY_CODE[code]! : SidecarError;
    return new cls(message, data, code);
  }
  return new SidecarError(String(error), {}, "error");
}
