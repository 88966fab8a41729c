/**
 * Client for the llm-sidecar daemon: MessagePack-RPC over its Unix socket.
 *
 * ```ts
 * import { Client } from "llm-sidecar";
 * const c = await Client.connect({ app: "my-app" });
 * console.log((await c.info()).version);
 * c.close();
 * ```
 */

export { Client, connect, type ClientOptions } from "./client.js";
export { ChatStream, PendingChatStream, chatDelta } from "./chat.js";
export { PendingCall, PendingStream, ResultStream, type CancelledOutcome } from "./calls.js";
export {
  bundledBinaryPaths,
  defaultDataDir,
  ensureDaemon,
  findDaemonBinary,
  type AutostartOptions,
  type AutostartResult,
} from "./autostart.js";
export { Subscription } from "./subscription.js";
export { socketPath } from "./discovery.js";
export { METHOD_PARAMS, Methods } from "./methods.js";
export type * from "./methods.js";
export type * from "./types.js";
export {
  CallTimeout,
  Cancelled,
  ConnectionClosed,
  DaemonNotRunning,
  DaemonStartFailed,
  ERRORS_BY_CODE,
  Internal,
  InvalidParams,
  InvalidRequest,
  KeyMissing,
  MethodNotFound,
  ProtocolError,
  ProviderError,
  QuotaExceeded,
  RateLimited,
  ShuttingDown,
  ConfigInvalid,
  SidecarConnectionError,
  SidecarError,
  TierRequired,
  Unauthorized,
  VaultLocked,
  errorFromWire,
} from "./errors.js";

/** The protocol revision this library was written for (`protocol` in hello/info answers). */
export const PROTOCOL = 1;
