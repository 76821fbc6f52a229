"""A small RESP2 client over a unix socket (stdlib only: the DAX guest has python3-minimal).

    c = Client("/tmp/s.sock")
    c.call("SET", "k", "v")          # -> b"OK"; error replies are returned as RespError
    c.pipeline([("GET", "a"), ...])  # -> [reply, ...]
"""

import socket


class RespError(Exception):
    """An error reply (-ERR ...); returned by call(), not raised."""

    def __str__(self):
        return self.args[0]


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Client:
    def __init__(self, path, timeout=60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError("bad reply line %r" % line)

    def send(self, *args):
        self.sock.sendall(encode(args))

    def call(self, *args):
        self.send(*args)
        return self.read()

    def pipeline(self, cmds, chunk=500):
        out = []
        for i in range(0, len(cmds), chunk):
            part = cmds[i:i + chunk]
            self.sock.sendall(b"".join(encode(c) for c in part))
            out.extend(self.read() for _ in part)
        return out


def info_fields(reply):
    """NVM.INFO's reply (an array of "name:value" lines, or one text) -> dict."""
    if isinstance(reply, RespError):
        raise reply
    if isinstance(reply, bytes):
        lines = reply.decode(errors="replace").splitlines()
    else:
        lines = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in reply]
    out = {}
    for line in lines:
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out
