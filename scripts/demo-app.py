#!/usr/bin/env python3
"""The workloads of `make demo` (scripts/demo.sh): tiny servers and a client.

Only the modules of Debian's python3-minimal are used (socket, threading, sys), so the
demo runs on a machine that has nothing more than that.

  demo-app.py http  PORT NAME   HTTP/1.1 server: answers every request with one line
                                saying who answered, what was asked and the
                                x-request-id the client's sidecar added
  demo-app.py greet PORT NAME   server-first TCP server (like SMTP): greets, then
                                echoes lines until QUIT
  demo-app.py greet-client HOST PORT
                                talks to a greet server and prints the conversation
"""

import socket
import sys
import threading


def serve(port, handler, name):
    ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ln.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ln.bind(("0.0.0.0", port))
    ln.listen(64)
    while True:
        conn, peer = ln.accept()
        t = threading.Thread(target=guarded, args=(handler, conn, peer, name), daemon=True)
        t.start()


def guarded(handler, conn, peer, name):
    try:
        handler(conn, peer, name)
    except OSError:
        pass
    finally:
        conn.close()


def read_head(f):
    """Returns (request line, headers with lower-case names), or None at the end."""
    line = f.readline(8192)
    while line in (b"\r\n", b"\n"):
        line = f.readline(8192)
    if not line:
        return None
    headers = {}
    while True:
        h = f.readline(8192)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return line.decode("latin-1").strip(), headers


def read_body(f, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline(1024).split(b";")[0], 16)
            if size == 0:
                while f.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += f.read(size)
            f.readline(1024)
    n = int(headers.get("content-length", "0") or "0")
    return f.read(n) if n else b""


def http_handler(conn, peer, name):
    f = conn.makefile("rb")
    while True:
        head = read_head(f)
        if head is None:
            return
        line, headers = head
        parts = line.split()
        if len(parts) != 3:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        method, target, _ = parts
        body = read_body(f, headers)
        text = "%s answered %s %s (%d bytes in) from %s, x-request-id: %s\n" % (
            name, method, target, len(body), peer[0], headers.get("x-request-id", "(none)"))
        out = text.encode()
        close = headers.get("connection", "").lower() == "close"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (
            len(out), b"Connection: close\r\n" if close else b"", out if method != "HEAD" else b""))
        if close:
            return


def greet_handler(conn, peer, name):
    conn.sendall(("220 %s ready\r\n" % name).encode())
    f = conn.makefile("rb")
    for line in f:
        if line.strip().upper() == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return
        conn.sendall(b"250 " + line.strip() + b"\r\n")


def greet_client(host, port):
    c = socket.create_connection((host, port), timeout=5)
    f = c.makefile("rb")
    print("  < " + f.readline().decode().strip())
    for msg in ("HELLO from web", "QUIT"):
        print("  > " + msg)
        c.sendall(msg.encode() + b"\r\n")
        print("  < " + f.readline().decode().strip())
    c.close()


def main(argv):
    if len(argv) == 4 and argv[1] == "http":
        serve(int(argv[2]), http_handler, argv[3])
    elif len(argv) == 4 and argv[1] == "greet":
        serve(int(argv[2]), greet_handler, argv[3])
    elif len(argv) == 4 and argv[1] == "greet-client":
        greet_client(argv[2], int(argv[3]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
