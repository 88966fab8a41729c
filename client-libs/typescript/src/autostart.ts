/**
 * Autostart: when no daemon answers on the socket, find the `llm-sidecar` binary, start
 * `llm-sidecar serve` detached (it outlives the app), and wait until it listens.
 *
 * Two apps starting at once make one daemon: the starter holds an exclusive-create lock file
 * `<socket>.autostart.lock` (holding its pid) while it spawns and waits; the other waits for the
 * socket. A lock whose pid is gone (a starter that crashed) is taken over. Should two starters
 * still race (a stale lock taken over by both), the daemon's own single-instance lock lets only
 * one of them run and the other exits with "already running", which is waited out as well.
 */

import { spawn } from "node:child_process";
import { accessSync, chmodSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { createConnection } from "node:net";
import { homedir } from "node:os";
import { delimiter, dirname, join, sep } from "node:path";
import { DaemonStartFailed } from "./errors.js";
import { packageDir } from "./package-dir.js";

export interface AutostartOptions {
  /** The daemon binary; default: `$LLM_SIDECAR_BIN`, the one bundled in this package, `llm-sidecar` on `PATH`. */
  binary?: string;
  /** `serve --data-dir`; default: the daemon's own default (`$XDG_DATA_HOME/llm-sidecar`, or its config's `daemon.data_dir`). */
  dataDir?: string;
  /** `--config` for the daemon; default: its own default (`$LLM_SIDECAR_CONFIG`, `$XDG_CONFIG_HOME/llm-sidecar/config.toml`). */
  configFile?: string;
  /** How long to wait for the started daemon to listen, in ms (default 15000). */
  startTimeoutMs?: number;
  /** The daemon's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

/** What autostart did (`Client.autostarted`). */
export interface AutostartResult {
  /** Whether this process spawned the daemon (false: another app started it meanwhile). */
  spawned: boolean;
  /** The spawned daemon's pid. */
  pid?: number;
  binary: string;
  /** Where the daemon's output goes. */
  log: string;
}

const BUNDLED = "bin";

/** `bin/<platform>-<arch>/llm-sidecar` inside this package (and its `app.asar.unpacked` twin in Electron). */
export function bundledBinaryPaths(dir: string | undefined = packageDir): string[] {
  if (!dir) return [];
  const rel = join(BUNDLED, `${process.platform}-${process.arch}`, "llm-sidecar");
  const paths = [join(dir, rel)];
  const asar = `${sep}app.asar${sep}`;
  if (dir.includes(asar)) paths.unshift(join(dir.replace(asar, `${sep}app.asar.unpacked${sep}`), rel));
  return paths;
}

function isExecutable(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The daemon binary autostart runs: `explicit`, else `$LLM_SIDECAR_BIN`, else the one bundled in
 * this package, else `llm-sidecar` on `PATH`. Throws `DaemonStartFailed` naming every place looked.
 */
export function findDaemonBinary(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  const looked: string[] = [];
  const given = explicit ?? env.LLM_SIDECAR_BIN;
  if (given) {
    if (isExecutable(given)) return given;
    const why = existsSync(given) ? "is not an executable file" : "does not exist";
    throw new DaemonStartFailed(`the llm-sidecar binary ${given} ${why} (${explicit ? "option binary" : "$LLM_SIDECAR_BIN"})`, { binary: given });
  }
  for (const p of bundledBinaryPaths()) {
    looked.push(p);
    if (existsSync(p) && !isExecutable(p)) {
      // A packer that dropped the executable bit; the file is ours to fix.
      try {
        chmodSync(p, 0o755);
      } catch {
        // left as is: reported below
      }
    }
    if (isExecutable(p)) return p;
  }
  for (const d of (env.PATH ?? "").split(delimiter)) {
    if (!d) continue;
    const p = join(d, "llm-sidecar");
    if (isExecutable(p)) return p;
  }
  looked.push("llm-sidecar on PATH");
  throw new DaemonStartFailed(
    `cannot autostart llm-sidecar: no binary found (looked at: option binary, $LLM_SIDECAR_BIN, ${looked.join(", ")}); pass { binary } or install it`,
    { looked },
  );
}

/** The daemon's default data dir: `$XDG_DATA_HOME/llm-sidecar` (`~/.local/share`), macOS `~/Library/Application Support/llm-sidecar`. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.HOME || homedir();
  if (process.platform === "darwin") return join(home, "Library", "Application Support", "llm-sidecar");
  return join(env.XDG_DATA_HOME || join(home, ".local", "share"), "llm-sidecar");
}

/** Whether something accepts connections on `path`. */
export function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => {
      s.destroy();
      resolve(false);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A starter holds the lock at most for its start timeout; one older than this is stale whatever its pid. */
const LOCK_MAX_AGE_MS = 120_000;

/** The pid in a start lock, if it has one. */
function lockHolder(lock: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(lock, "utf8"), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Takes `<socket>.autostart.lock` (true), or false when a live process holds it. */
function tryLock(lock: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lock, "wx", 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const holder = lockHolder(lock);
    let age: number;
    try {
      age = Date.now() - statSync(lock).mtimeMs;
    } catch {
      continue; // removed meanwhile: try again
    }
    if (age < LOCK_MAX_AGE_MS) {
      if (holder !== undefined && alive(holder)) return false;
      if (holder === undefined && age < 2000) return false; // being written right now
    }
    // The starter died holding it (or it is far too old to be held): take it over.
    try {
      unlinkSync(lock);
    } catch {
      // someone else took it over first
    }
  }
  return false;
}

/** The last lines the log got since byte `from` (what this start wrote, not an earlier run's). */
function logTail(log: string, from: number): string {
  try {
    const lines = readFileSync(log).subarray(from).toString("utf8").trimEnd().split("\n");
    return lines.slice(-15).join("\n");
  } catch {
    return "";
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * Makes sure a daemon listens on `socket`: returns at once if one does; otherwise starts one
 * (or waits for the one another app is starting). Rejects with `DaemonStartFailed` naming the
 * log when the daemon cannot be started or does not listen within `startTimeoutMs`.
 */
export async function ensureDaemon(socket: string, opts: AutostartOptions = {}): Promise<AutostartResult | undefined> {
  if (await accepts(socket)) return undefined;
  const env = opts.env ?? process.env;
  const binary = findDaemonBinary(opts.binary, env);
  const dataDir = opts.dataDir ?? defaultDataDir(env);
  const log = join(dataDir, "daemon.log");
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  const lock = `${socket}.autostart.lock`;
  const logStart = sizeOf(log);
  const fail = (why: string, extra: Record<string, unknown> = {}): DaemonStartFailed => {
    const tail = logTail(log, logStart);
    return new DaemonStartFailed(`could not autostart llm-sidecar (${binary}): ${why}; its log is ${log}${tail ? `:\n${tail}` : ""}`, {
      binary,
      log,
      socket,
      ...extra,
    });
  };
  try {
    // The socket's directory must be private (the daemon checks it): create it 0700 like the daemon.
    mkdirSync(dirname(socket), { recursive: true, mode: 0o700 });
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw fail(`cannot create its directories: ${(e as Error).message}`);
  }
  while (Date.now() < deadline) {
    if (await accepts(socket)) return { spawned: false, binary, log };
    let locked: boolean;
    try {
      locked = tryLock(lock);
    } catch (e) {
      throw fail(`cannot take the start lock ${lock}: ${(e as Error).message}`);
    }
    if (!locked) {
      await sleep(25);
      continue;
    }
    try {
      if (await accepts(socket)) return { spawned: false, binary, log };
      return await spawnAndWait(binary, socket, log, opts, env, deadline, fail);
    } finally {
      try {
        unlinkSync(lock);
      } catch {
        // already gone
      }
    }
  }
  const holder = lockHolder(lock);
  throw fail(`nothing listened on ${socket} within ${timeoutMs} ms${holder ? ` (process ${holder} holds the start lock ${lock})` : ""}`);
}

async function spawnAndWait(
  binary: string,
  socket: string,
  log: string,
  opts: AutostartOptions,
  env: NodeJS.ProcessEnv,
  deadline: number,
  fail: (why: string, extra?: Record<string, unknown>) => DaemonStartFailed,
): Promise<AutostartResult> {
  const args = ["--socket", socket];
  if (opts.configFile) args.push("--config", opts.configFile);
  args.push("serve");
  if (opts.dataDir) args.push("--data-dir", opts.dataDir);
  const from = sizeOf(log);
  let fd: number;
  try {
    fd = openSync(log, "a", 0o600);
  } catch (e) {
    throw fail(`cannot open its log: ${(e as Error).message}`);
  }
  let exited: string | undefined;
  let spawnError: Error | undefined;
  let pid: number | undefined;
  try {
    const child = spawn(binary, args, { detached: true, stdio: ["ignore", fd, fd], env });
    child.once("error", (e) => {
      spawnError = e;
    });
    child.once("exit", (code, signal) => {
      exited = signal ? `signal ${signal}` : `exit status ${code}`;
    });
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  while (Date.now() < deadline) {
    if (await accepts(socket)) return { spawned: true, pid, binary, log };
    if (spawnError) throw fail(`cannot run it: ${spawnError.message}`);
    if (exited !== undefined) {
      // Lost a race to another daemon: that one will listen.
      if (/already running/.test(logTail(log, from))) return waitForOther(socket, deadline, binary, log, fail);
      throw fail(`it stopped (${exited}) before listening on ${socket}`);
    }
    await sleep(20);
  }
  throw fail(`it did not listen on ${socket} within ${opts.startTimeoutMs ?? 15_000} ms`, { pid });
}

async function waitForOther(
  socket: string,
  deadline: number,
  binary: string,
  log: string,
  fail: (why: string) => DaemonStartFailed,
): Promise<AutostartResult> {
  while (Date.now() < deadline) {
    if (await accepts(socket)) return { spawned: false, binary, log };
    await sleep(20);
  }
  throw fail(`another daemon holds ${socket} but does not accept connections`);
}
