#!/usr/bin/env python3
"""ws_probe — one WebSocket client that waits to be closed, for shell tests.

    ws_probe.py --port P --path /chat/1 [--secret S --user N] [--send TEXT] [--wait SECONDS]

Connects to ws://127.0.0.1:P<path> (with an HS256 identity token for user N in access_token when
--secret is given), prints "open" once the server accepted the upgrade, sends TEXT as one frame
when asked, reads (and ignores) what the server sends, and prints how it ended:
"close <code> <reason>" for a close frame, "eof" when the connection ended without one,
"timeout" after --wait seconds. Exit status 0 for a close frame, 1 otherwise.
The shell has no WebSocket client, and the services' C client is a library, not a program.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret, user):
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": str(user), "name": "probe%d" % user, "iat": now,
                                "exp": now + 3600}).encode())
    signing_input = ("%s.%s" % (header, claims)).encode()
    mac = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return "%s.%s.%s" % (header, claims, b64url(mac))


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(sock):
    b0, b1 = read_exact(sock, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(sock, 8))[0]
    if b1 & 0x80:
        read_exact(sock, 4)  # a server never masks; read past it if one did
    return b0 & 0x0F, read_exact(sock, length)


def send_frame(sock, opcode, payload):
    mask = os.urandom(4)  # a client must mask every frame
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--secret")
    p.add_argument("--user", type=int, default=1)
    p.add_argument("--send")
    p.add_argument("--wait", type=float, default=30)
    a = p.parse_args()
    path = a.path
    if a.secret:
        path += ("&" if "?" in path else "?") + "access_token=" + hs256_token(a.secret, a.user)
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n" % (path, a.port, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            print("eof", flush=True)
            return 1
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status + " ":
        print("refused %s" % status, flush=True)
        return 1
    print("open", flush=True)
    if a.send:
        send_frame(sock, 0x1, a.send.encode())
    deadline = time.monotonic() + a.wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print("timeout", flush=True)
            return 1
        sock.settimeout(left)
        try:
            opcode, payload = read_frame(sock)
        except socket.timeout:
            print("timeout", flush=True)
            return 1
        except (EOFError, ConnectionError):
            print("eof", flush=True)
            return 1
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            print("close %d %s" % (code, payload[2:].decode(errors="replace")), flush=True)
            return 0
        if opcode == 0x9:
            send_frame(sock, 0xA, payload)  # keepalive pings get their pong


if __name__ == "__main__":
    sys.exit(main())
