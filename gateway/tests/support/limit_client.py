"""An independent client for the connection-limit tests (Python's own
socket and ssl): opens COUNT connections that each get one answer and stay
open, then one more, and prints that one's answer as JSON.

    python3 limit_client.py HOST PORT COUNT [CAFILE NAME]

With CAFILE and NAME every connection is TLS, verified against CAFILE for
NAME. Every wait is bounded (5 s per socket operation).
"""
import json
import socket
import ssl
import sys

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = None
name = "t"
if len(sys.argv) > 5:
    ctx = ssl.create_default_context(cafile=sys.argv[4])
    name = sys.argv[5]


def connect():
    s = socket.create_connection((host, port), timeout=5)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname=name)
    return s


def head(s):
    """The answer's head, read up to its blank line (or the close)."""
    got = b""
    while b"\r\n\r\n" not in got:
        part = s.recv(4096)
        if not part:
            break
        got += part
    return got.split(b"\r\n\r\n")[0].decode("latin-1")


open_ones = []
served = 0
failed = None
for _ in range(count):
    s = connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
    answer = head(s)
    if answer.startswith("HTTP/1.1 200"):
        served += 1
    elif failed is None:
        failed = answer
    open_ones.append(s)

result = {"served": served, "first_failed": failed}
try:
    s = connect()
    result["over"] = head(s)
    s.close()
except OSError as e:
    result["over"] = "error: %s" % e
print(json.dumps(result))
for s in open_ones:
    s.close()
