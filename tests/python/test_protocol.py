"""The wire protocol is language-neutral: a plain Python msgpack client talks to the daemon."""
import socket

import msgpack


class RawClient:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.next_id = 1

    def send(self, msg):
        self.sock.sendall(msgpack.packb(msg))

    def recv(self):
        while True:
            for msg in self.unpacker:
                return msg
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("daemon closed the connection")
            self.unpacker.feed(data)

    def call(self, method, *params):
        msgid = self.next_id
        self.next_id += 1
        self.send([0, msgid, method, list(params)])
        kind, rid, err, result = self.recv()
        assert kind == 1 and rid == msgid
        return err, result


def test_daemon_info_over_the_socket(daemon):
    c = RawClient(daemon)
    err, hello = c.call("daemon.hello", {"app": "python-test", "version": "0.0.1"})
    assert err is None
    assert hello["app"] == "python-test"
    err, info = c.call("daemon.info")
    assert err is None
    assert info["server"] == "llm-sidecar"
    assert isinstance(info["version"], str) and isinstance(info["protocol"], int)
    assert info["app"] == "python-test"
    assert info["socket"] == daemon


def test_errors_are_structured(daemon):
    c = RawClient(daemon)
    err, result = c.call("no.such.method")
    assert result is None
    assert err["code"] == "method_not_found"
    assert err["data"]["method"] == "no.such.method"
    err, _ = c.call("daemon.hello", {"app": 5})
    assert err["code"] == "invalid_params"
    assert isinstance(err["message"], str)


def test_pipelined_requests_answered_by_msgid(daemon):
    c = RawClient(daemon)
    c.sock.sendall(b"".join(msgpack.packb([0, i, "daemon.info", []]) for i in range(100)))
    ids = set()
    for _ in range(100):
        kind, rid, err, _ = c.recv()
        assert kind == 1 and err is None
        ids.add(rid)
    assert ids == set(range(100))
