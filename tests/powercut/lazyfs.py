#!/usr/bin/python3
"""lazyfs: a FUSE passthrough filesystem that can simulate a power cut.

Job: mount MOUNT over BACKING (a plain directory), pass every operation through to BACKING, and
remember, per file, what a disk would hold if the power went off now. On the control command
``cut`` every file is put back to that state, so a program whose data lives on MOUNT sees, after
it is restarted, exactly what survived the "power loss". Used by ``tests/powercut.rs``.

Durability model (what survives a cut):

* File data. A file's content and size become durable when the file is fsync'ed or
  fdatasync'ed (on any of its descriptors), or written through a descriptor opened with
  O_SYNC/O_DSYNC. Nothing else makes data durable: not close(), not sync_file_range(2) (the
  kernel has no FUSE request for it, so it never reaches this process), not the page cache.
  ``cut strict``: every file goes back to its content and size at its last durable point.
  ``cut mild``: overwrites inside the durable size survive (as if the disk had written them back
  anyway); only what lies beyond the durable size is lost (the file is truncated to its durable
  size), and bytes that a truncation since the durable point cut off come back.
* Names. An entry that existed at mount time is durable. A file, directory, symlink or link
  created since is volatile until it is fsync'ed (which also makes its volatile parent
  directories durable, as a journaling filesystem does), or its parent directory is fsync'ed. A
  cut removes every volatile entry. unlink, rmdir and rename are durable at once (a lenient
  assumption: a real filesystem may undo them without a directory fsync); a renamed entry keeps
  the durability of its source name, and an entry replaced by a rename is forgotten.
* Metadata (mode, owner, times) is passed through and never reverted.

Invariants:

* A file with no entry in ``states`` holds exactly its durable content (it was not modified since
  the mount or since its last durable point). The first modification after a durable point
  creates its state: the durable size, and a duplicate descriptor used to revert it.
* ``state.undo`` maps a block index to that block's durable bytes (clipped to the durable size);
  a block is saved once, just before its first overwrite (or truncation) since the durable point,
  so it always holds durable bytes. A cut restores them; an fsync drops the whole state. No file
  is ever copied whole.
* One lock serialises every operation that reads or changes file data or names with the control
  commands (FUSE runs several threads), so a cut never sees half an operation. The test cuts only after the writer died and was reaped: the kernel waits
  for any FUSE request that the dying process had already handed to this process, so nothing of
  that process is still on its way.

Kernel caches: libfuse 2 never enables the writeback cache, so every write(2) reaches this
process before it returns (write-through); reads may be served from the page cache, which the
kernel drops when a file is opened again (``keep_cache`` is never set). Attribute and entry
timeouts are 0, so sizes and names are fresh after a cut. POSIX (fcntl) and flock locks are not
implemented here on purpose: the kernel then keeps them itself, which is correct for processes
on one machine. Shared writable mmap (SQLite's -shm file) needs the page cache, so ``direct_io``
is off by default (``--direct-io`` turns it on, and shared mmap then fails). Extended attributes
are not implemented (ENOSYS), so the kernel stops asking for security.capability on each write.

Usage: lazyfs.py BACKING MOUNT --control SOCKET [--direct-io] [--single-thread] [--block BYTES]

Control protocol (a unix stream socket at SOCKET, one command per line, one JSON line back):
``ping`` -> {"ok": true, "mounted": bool}; ``stats`` -> counters; ``cut strict`` / ``cut mild``
-> what the cut reverted; ``checkpoint`` -> makes everything durable as it is now. Unmount with
``umount MOUNT`` (or ``fusermount -u MOUNT``); the process then exits.
"""

import argparse
import errno
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations

# Flags a backing descriptor must not carry: the kernel already handled creation and truncation,
# O_APPEND would make pwrite ignore its offset, O_DIRECT needs aligned buffers, and O_(D)SYNC is
# modelled (see `FileState`) rather than paid for.
STRIP_FLAGS = (
    os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND | os.O_NOCTTY | os.O_SYNC | os.O_DSYNC
    | getattr(os, "O_DIRECT", 0)
)


class FileState:
    """What a file (one backing inode) held at its last durable point, and how to get back there."""

    def __init__(self, fd, block):
        self.fd = fd  # own read-write descriptor: the file's own may be closed before a cut
        self.block = block
        self.durable_size = os.fstat(fd).st_size
        self.min_size = self.durable_size  # the smallest size a truncation left since then
        self.undo = {}  # block index -> durable bytes of that block

    def _save(self, first, last):
        for b in range(first, last + 1):
            if b not in self.undo:
                start = b * self.block
                self.undo[b] = os.pread(self.fd, min(self.block, self.durable_size - start), start)

    def before_write(self, offset, length):
        end = min(offset + length, self.durable_size)
        if offset < end:
            self._save(offset // self.block, (end - 1) // self.block)

    def before_truncate(self, length):
        self.min_size = min(self.min_size, length)
        if length < self.durable_size:
            self._save(length // self.block, (self.durable_size - 1) // self.block)

    def revert(self, mild):
        """Puts the durable state back; returns (bytes restored, bytes dropped past the end)."""
        dropped = max(0, os.fstat(self.fd).st_size - self.durable_size)
        os.ftruncate(self.fd, self.durable_size)
        restored = 0
        for b, data in self.undo.items():
            start = b * self.block
            lo = max(start, self.min_size) if mild else start
            if lo < start + len(data):
                restored += os.pwrite(self.fd, data[lo - start:], lo)
        return restored, dropped

    def undo_bytes(self):
        return sum(len(d) for d in self.undo.values())


def parent(path):
    return os.path.dirname(path) or "/"


class LazyFS(Operations):
    """The passthrough operations (fusepy, raw_fi: handlers get the `fuse_file_info`)."""

    use_ns = True
    # Not implemented, so libfuse answers ENOSYS and the kernel stops asking: otherwise every
    # write(2) costs a second round trip (the kernel looks up security.capability each time).
    getxattr = None
    listxattr = None
    setxattr = None
    removexattr = None

    def __init__(self, root, block, direct_io):
        self.root = os.path.realpath(root)
        self.block = block
        self.direct_io = direct_io
        self.mutex = threading.Lock()
        self.states = {}  # (st_dev, st_ino) -> FileState
        self.fh_key = {}  # open backing descriptor -> (st_dev, st_ino)
        self.sync_fds = set()  # descriptors opened with O_SYNC/O_DSYNC
        self.volatile = set()  # mount paths ("/a/b") created since their last durable point
        self.mounted = False
        self.counts = {}
        self.bytes_written = 0
        self.started = time.monotonic()

    # --- helpers -------------------------------------------------------------------------------

    def _b(self, path):
        return self.root + path

    def _count(self, op):
        self.counts[op] = self.counts.get(op, 0) + 1

    def _state(self, key, fd):
        st = self.states.get(key)
        if st is None:
            # A new read-write description of the same inode (the caller's may be write-only;
            # /proc/self/fd reaches the inode even after it was unlinked).
            st = FileState(os.open("/proc/self/fd/%d" % fd, os.O_RDWR), self.block)
            self.states[key] = st
        return st

    def _entry_durable(self, path):
        while path and path != "/":
            self.volatile.discard(path)
            path = parent(path)

    def _make_durable(self, key, path):
        st = self.states.pop(key, None)
        if st is not None:
            os.close(st.fd)
        if path is not None:
            self._entry_durable(path)

    def _key_of(self, fh, path):
        if fh is not None and fh.fh in self.fh_key:
            return self.fh_key[fh.fh]
        st = os.lstat(self._b(path))
        return (st.st_dev, st.st_ino)

    # --- control ---------------------------------------------------------------------------------

    def cut(self, mild):
        with self.mutex:
            t0 = time.monotonic()
            restored = dropped = 0
            for st in self.states.values():
                r, d = st.revert(mild)
                restored += r
                dropped += d
                os.close(st.fd)
            reverted = len(self.states)
            self.states.clear()
            removed = []
            for path in sorted(self.volatile, key=lambda p: p.count("/"), reverse=True):
                b = self._b(path)
                if os.path.isdir(b) and not os.path.islink(b):
                    shutil.rmtree(b, ignore_errors=True)
                    removed.append(path)
                elif os.path.lexists(b):
                    os.unlink(b)
                    removed.append(path)
            self.volatile.clear()
            self._count("cut")
            return {
                "ok": True,
                "mode": "mild" if mild else "strict",
                "files_reverted": reverted,
                "bytes_restored": restored,
                "bytes_dropped": dropped,
                "entries_removed": removed,
                "ms": round((time.monotonic() - t0) * 1000, 2),
            }

    def checkpoint(self):
        with self.mutex:
            for st in self.states.values():
                os.close(st.fd)
            self.states.clear()
            self.volatile.clear()
            return {"ok": True}

    def stats(self):
        with self.mutex:
            return {
                "ok": True,
                "mounted": self.mounted,
                "uptime_s": round(time.monotonic() - self.started, 3),
                "ops": dict(self.counts),
                "bytes_written": self.bytes_written,
                "dirty_files": len(self.states),
                "undo_bytes": sum(st.undo_bytes() for st in self.states.values()),
                "volatile_entries": len(self.volatile),
            }

    # --- filesystem operations -----------------------------------------------------------------

    def init(self, path):
        self.mounted = True

    def destroy(self, path):
        self.mounted = False

    def access(self, path, amode):
        if not os.access(self._b(path), amode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        if fh is not None:
            st = os.fstat(fh.fh)
        else:
            st = os.lstat(self._b(path))
        return {
            "st_mode": st.st_mode,
            "st_ino": st.st_ino,
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_size": st.st_size,
            "st_blocks": st.st_blocks,
            "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._b(path))

    def readlink(self, path):
        return os.readlink(self._b(path))

    def statfs(self, path):
        sv = os.statvfs(self._b(path))
        return {k: getattr(sv, k) for k in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    def chmod(self, path, mode):
        os.chmod(self._b(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._b(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self._b(path), follow_symlinks=False)
        else:
            os.utime(self._b(path), ns=times, follow_symlinks=False)

    def mkdir(self, path, mode):
        with self.mutex:
            self._count("mkdir")
            os.mkdir(self._b(path), mode)
            self.volatile.add(path)

    def mknod(self, path, mode, dev):
        with self.mutex:
            os.mknod(self._b(path), mode, dev)
            self.volatile.add(path)

    def symlink(self, target, source):
        with self.mutex:
            os.symlink(source, self._b(target))
            self.volatile.add(target)

    def link(self, target, source):
        with self.mutex:
            os.link(self._b(source), self._b(target))
            self.volatile.add(target)

    def rmdir(self, path):
        with self.mutex:
            os.rmdir(self._b(path))
            self.volatile.discard(path)

    def unlink(self, path):
        with self.mutex:
            self._count("unlink")
            os.unlink(self._b(path))
            self.volatile.discard(path)

    def rename(self, old, new):
        with self.mutex:
            self._count("rename")
            os.rename(self._b(old), self._b(new))
            under = lambda p, d: p == d or p.startswith(d + "/")
            self.volatile = {p for p in self.volatile if not under(p, new)}
            moved = {p for p in self.volatile if under(p, old)}
            self.volatile -= moved
            self.volatile |= {new + p[len(old):] for p in moved}

    def _opened(self, fd, fi):
        st = os.fstat(fd)
        self.fh_key[fd] = (st.st_dev, st.st_ino)
        if fi.flags & os.O_DSYNC:
            self.sync_fds.add(fd)
        fi.fh = fd
        fi.direct_io = 1 if self.direct_io else 0
        fi.keep_cache = 0

    def open(self, path, fi):
        with self.mutex:
            self._count("open")
            fd = os.open(self._b(path), fi.flags & ~STRIP_FLAGS)
            try:
                if fi.flags & os.O_TRUNC:
                    st = os.fstat(fd)
                    self._state((st.st_dev, st.st_ino), fd).before_truncate(0)
                    os.ftruncate(fd, 0)
                self._opened(fd, fi)
            except BaseException:
                os.close(fd)
                raise
            return 0

    def create(self, path, mode, fi):
        with self.mutex:
            self._count("create")
            b = self._b(path)
            existed = os.path.lexists(b)
            fd = os.open(b, (fi.flags & ~STRIP_FLAGS) | os.O_CREAT, mode)
            if not existed:
                self.volatile.add(path)
            self._opened(fd, fi)
            return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            return os.pread(fh.fh, size, offset)

    def write(self, path, data, offset, fh):
        with self.mutex:
            self._count("write")
            key = self.fh_key[fh.fh]
            self._state(key, fh.fh).before_write(offset, len(data))
            n = os.pwrite(fh.fh, data, offset)
            self.bytes_written += n
            if fh.fh in self.sync_fds:
                self._make_durable(key, path)
            return n

    def truncate(self, path, length, fh=None):
        with self.mutex:
            self._count("truncate")
            if fh is not None:
                fd, own = fh.fh, False
            else:
                fd, own = os.open(self._b(path), os.O_WRONLY), True
            try:
                st = os.fstat(fd)
                self._state((st.st_dev, st.st_ino), fd).before_truncate(length)
                os.ftruncate(fd, length)
            finally:
                if own:
                    os.close(fd)

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self._count("fdatasync" if datasync else "fsync")
            self._make_durable(self._key_of(fh, path), path)

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            self._count("fsyncdir")
            self.volatile = {p for p in self.volatile if parent(p) != path}
            self._entry_durable(path)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        with self.mutex:
            self.fh_key.pop(fh.fh, None)
            self.sync_fds.discard(fh.fh)
            os.close(fh.fh)


def serve_control(fs, sock_path):
    """Answers control commands on a unix socket (a thread; FUSE runs in the main thread)."""
    if os.path.lexists(sock_path):
        os.unlink(sock_path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(8)

    def handle(conn):
        with conn, conn.makefile("rwb") as f:
            for line in f:
                words = line.decode("utf-8", "replace").split()
                try:
                    if words == ["ping"]:
                        reply = {"ok": True, "mounted": fs.mounted}
                    elif words == ["stats"]:
                        reply = fs.stats()
                    elif len(words) == 2 and words[0] == "cut" and words[1] in ("strict", "mild"):
                        reply = fs.cut(words[1] == "mild")
                    elif words == ["checkpoint"]:
                        reply = fs.checkpoint()
                    else:
                        reply = {"ok": False, "error": "unknown command: %r" % " ".join(words)}
                except OSError as e:
                    reply = {"ok": False, "error": str(e)}
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backing")
    ap.add_argument("mount")
    ap.add_argument("--control", required=True, help="unix socket for ping/stats/cut/checkpoint")
    ap.add_argument("--direct-io", action="store_true", help="bypass the page cache (no shared mmap)")
    ap.add_argument("--single-thread", action="store_true",
                    help="one FUSE thread (slower: the default loop overlaps kernel and Python)")
    ap.add_argument("--block", type=int, default=4096, help="undo-log block size in bytes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fs = LazyFS(args.backing, args.block, args.direct_io)
    serve_control(fs, args.control)
    FUSE(
        fs,
        args.mount,
        raw_fi=True,
        foreground=True,
        nothreads=args.single_thread,
        fsname="lazyfs",
        subtype="lazyfs",
        use_ino=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        big_writes=True,
        max_write=131072,
        max_read=131072,
    )


if __name__ == "__main__":
    main()
