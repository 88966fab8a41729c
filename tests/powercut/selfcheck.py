#!/usr/bin/python3
"""Self-check of lazyfs.py: proves that its power cut keeps exactly what was made durable.

Job: mount a fresh lazyfs in a temp dir and check, for the strict and the mild model, that
write + fsync survives a cut, that a plain write does not, that write + sync_file_range(2) does
not, that new names vanish unless fsync'ed, that truncations come back; then that SQLite in WAL
mode works on the mount (shared mmap of -shm, fcntl locks) and keeps every commit a killed
writer saw acknowledged with synchronous=FULL, and loses them with synchronous=OFF (so the cut
really bites); and measure throughput (writes/s, write+fdatasync/s, SQLite commits/s).

Prints one line per check and a JSON line starting with "lazyfs-selfcheck-json: " with the
numbers; exits 1 if any check failed. Run by tests/powercut.rs; by hand:
    /usr/bin/python3 tests/powercut/selfcheck.py [--variants]
(--variants also measures the throughput with --direct-io and with --single-thread.)
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAZYFS = os.path.join(HERE, "lazyfs.py")

libc = ctypes.CDLL(None, use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER, as sled calls it


def sync_file_range(fd, offset, nbytes):
    if libc.sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_ALL) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Mount:
    """One lazyfs process over a backing dir, with its control socket."""

    def __init__(self, root, extra=()):
        self.backing = os.path.join(root, "backing")
        self.mnt = os.path.join(root, "mnt")
        self.ctl = os.path.join(root, "ctl.sock")
        os.makedirs(self.backing)
        os.makedirs(self.mnt)
        self.log = open(os.path.join(root, "lazyfs.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, LAZYFS, self.backing, self.mnt, "--control", self.ctl, *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.call("ping").get("mounted") and os.path.ismount(self.mnt):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("lazyfs did not mount; log: %s" % self.logs())
            time.sleep(0.02)

    def call(self, cmd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(self.ctl)
            s.sendall((cmd + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise RuntimeError("lazyfs %s: %s" % (cmd, reply))
        return reply

    def logs(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def path(self, name):
        return os.path.join(self.mnt, name)

    def close(self):
        subprocess.run(["umount", self.mnt], check=False, stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            subprocess.run(["umount", "-l", self.mnt], check=False, stderr=subprocess.DEVNULL)
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Checks:
    def __init__(self):
        self.ok = 0
        self.failed = []

    def check(self, name, cond, detail=""):
        if cond:
            self.ok += 1
            print("  ok    %s" % name)
        else:
            self.failed.append(name)
            print("  FAIL  %s %s" % (name, detail))


def write_file(path, data, fsync=False, mode="wb"):
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_checks(m, c, mode):
    """The durability model, file by file, for one cut mode."""
    p = lambda n: m.path("%s-%s" % (mode, n))
    base = b"B" * 10000
    # 1. write + fsync survives.
    write_file(p("fsynced"), base, fsync=True)
    # 2. Plain writes (an append and an overwrite inside the durable size) after the fsync.
    write_file(p("plain"), base, fsync=True)
    with open(p("plain"), "r+b") as f:
        f.write(b"X" * 100)
        f.seek(0, 2)
        f.write(b"A" * 5000)
    # 3. write + sync_file_range (what sled 0.34 does instead of fsync on Linux).
    write_file(p("sfr"), base, fsync=True)
    fd = os.open(p("sfr"), os.O_RDWR)
    os.pwrite(fd, b"S" * 5000, len(base))
    os.pwrite(fd, b"s" * 10, 0)
    sync_file_range(fd, 0, 0)
    os.close(fd)
    # 4. fdatasync counts like fsync.
    fd = os.open(p("fdatasync"), os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, base, 0)
    os.fdatasync(fd)
    os.close(fd)
    # 5. O_DSYNC writes are durable one by one.
    fd = os.open(p("dsync"), os.O_RDWR | os.O_CREAT | os.O_DSYNC, 0o644)
    os.pwrite(fd, base, 0)
    os.close(fd)
    # 6. New names: never fsync'ed vanishes; parent dir fsync'ed keeps the (empty) file.
    write_file(p("dirsynced"), b"data not synced")
    fsync_dir(m.mnt)
    write_file(p("new"), b"never synced")
    # 7. A new dir with a fsync'ed file inside survives; one without any fsync vanishes.
    os.mkdir(p("dir-kept"))
    write_file(os.path.join(p("dir-kept"), "f"), b"kept", fsync=True)
    os.mkdir(p("dir-lost"))
    write_file(os.path.join(p("dir-lost"), "f"), b"lost")
    # 8. Truncation and O_TRUNC rewrite without fsync come back.
    write_file(p("trunc"), base, fsync=True)
    os.truncate(p("trunc"), 100)
    write_file(p("rewrite"), base, fsync=True)
    write_file(p("rewrite"), b"short")  # open(O_TRUNC) + write, no fsync
    # 9. The atomic-replace pattern (write tmp, fsync, rename) survives.
    write_file(p("target"), b"old", fsync=True)
    write_file(p("target.tmp"), b"new content", fsync=True)
    os.rename(p("target.tmp"), p("target"))

    cut = m.call("cut " + mode)
    print("  cut %s: %s" % (mode, json.dumps(cut)))
    mild = mode == "mild"
    c.check(mode + ": write+fsync survives", read(p("fsynced")) == base)
    expect_plain = b"X" * 100 + base[100:] if mild else base
    c.check(mode + ": plain append lost" + (", overwrite kept" if mild else ", overwrite undone"),
            read(p("plain")) == expect_plain, repr((read(p("plain")) or b"")[:20]))
    expect_sfr = b"s" * 10 + base[10:] if mild else base
    c.check(mode + ": write+sync_file_range not durable", read(p("sfr")) == expect_sfr,
            "len %s" % len(read(p("sfr")) or b""))
    c.check(mode + ": write+fdatasync survives", read(p("fdatasync")) == base)
    c.check(mode + ": O_DSYNC write survives", read(p("dsync")) == base)
    c.check(mode + ": new file never fsynced vanishes", read(p("new")) is None)
    c.check(mode + ": new file in fsynced dir stays, empty", read(p("dirsynced")) == b"")
    c.check(mode + ": fsync keeps the new dir above", read(os.path.join(p("dir-kept"), "f")) == b"kept")
    c.check(mode + ": new dir never fsynced vanishes", not os.path.exists(p("dir-lost")))
    c.check(mode + ": truncation undone", read(p("trunc")) == base)
    c.check(mode + ": O_TRUNC rewrite undone", read(p("rewrite")) == base)
    c.check(mode + ": fsync+rename survives", read(p("target")) == b"new content")


SQLITE_CHILD = r"""
import sqlite3, sys
db, sync, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("pragma synchronous=" + sync)
c.execute("create table if not exists t(id integer primary key, pad blob)")
n = first
while True:
    c.execute("begin")
    c.execute("insert into t values(?, randomblob(200))", (n,))
    c.execute("commit")
    sys.stdout.write("%d\n" % n)
    sys.stdout.flush()
    n += 1
"""


def sqlite_round(m, sync, mode, first, seconds):
    """A writer commits one row per transaction; SIGKILL it, cut, and count what survived."""
    import sqlite3

    db = m.path("wal.db")
    child = subprocess.Popen([sys.executable, "-c", SQLITE_CHILD, db, sync, str(first)],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    acked = []
    reader = threading.Thread(target=lambda: acked.extend(int(x) for x in child.stdout))
    reader.start()
    time.sleep(seconds)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    m.call("cut " + mode)
    c = sqlite3.connect(db)
    integrity = c.execute("pragma integrity_check").fetchone()[0]
    present = {r[0] for r in c.execute("select id from t where id >= ?", (first,))}
    c.close()
    lost = [i for i in acked if i not in present]
    return {"sync": sync, "mode": mode, "acked": len(acked), "lost": len(lost),
            "commits_per_s": round(len(acked) / seconds), "integrity": integrity}


def sqlite_checks(m, c, results):
    for i, (sync, mode) in enumerate([("full", "strict"), ("full", "strict"), ("full", "mild"),
                                      ("off", "strict")]):
        r = sqlite_round(m, sync, mode, (i + 1) * 1_000_000, 1.0)
        results.append(r)
        print("  sqlite round: %s" % json.dumps(r))
        c.check("sqlite %s/%s: opens, integrity ok" % (sync, mode), r["integrity"] == "ok", r["integrity"])
        if sync == "full":
            c.check("sqlite full/%s: every acknowledged commit survives (%d)" % (mode, r["acked"]),
                    r["acked"] > 0 and r["lost"] == 0, json.dumps(r))
        else:
            c.check("sqlite off/%s: acknowledged commits are lost (%d of %d)" % (mode, r["lost"], r["acked"]),
                    r["lost"] > 0, json.dumps(r))


def bench(m, seconds=1.0):
    """Raw throughput over the mount: 4 KiB overwrites, and 128-byte append + fdatasync pairs."""
    out = {}
    path = m.path("bench")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.pwrite(fd, b"\0" * (1 << 20), 0)
    os.fsync(fd)
    buf = b"w" * 4096
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        os.pwrite(fd, buf, (n % 256) * 4096)
        n += 1
    out["writes_4k_per_s"] = round(n / (time.monotonic() - t0))
    rec = b"r" * 128
    off = 1 << 20
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        os.pwrite(fd, rec, off)
        os.fdatasync(fd)
        off += len(rec)
        n += 1
    out["write_fdatasync_per_s"] = round(n / (time.monotonic() - t0))
    os.close(fd)
    os.unlink(path)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", action="store_true", help="also bench --direct-io and --single-thread")
    args = ap.parse_args()
    c = Checks()
    numbers = {"sqlite": []}
    with tempfile.TemporaryDirectory(prefix="lazyfs-selfcheck-") as root:
        m = Mount(os.path.join(root, "default"))
        try:
            print("lazyfs self-check (mount %s)" % m.mnt)
            for mode in ("strict", "mild"):
                file_checks(m, c, mode)
            sqlite_checks(m, c, numbers["sqlite"])
            numbers["bench"] = bench(m)
            print("  bench (default: page cache, multi-threaded): %s" % json.dumps(numbers["bench"]))
            numbers["stats"] = m.call("stats")
        except Exception as e:  # report, then fail below
            import traceback
            traceback.print_exc()
            c.check("no exception", False, "%r; lazyfs log: %s" % (e, m.logs()))
        finally:
            m.close()
        if args.variants:
            for name, extra in (("direct_io", ["--direct-io"]), ("single_thread", ["--single-thread"])):
                v = Mount(os.path.join(root, name), extra)
                try:
                    numbers["bench_" + name] = bench(v)
                    print("  bench (%s): %s" % (name, json.dumps(numbers["bench_" + name])))
                finally:
                    v.close()
    numbers["checks_ok"] = c.ok
    numbers["checks_failed"] = c.failed
    print("lazyfs-selfcheck-json: " + json.dumps(numbers))
    if c.failed:
        print("lazyfs self-check: %d checks FAILED: %s" % (len(c.failed), ", ".join(c.failed)))
        sys.exit(1)
    print("lazyfs self-check: all %d checks ok" % c.ok)


if __name__ == "__main__":
    main()
