#!/usr/bin/env python3
"""A loopback HTTP proxy that counts the body bytes a registry sends.

Usage: count-proxy.py UPSTREAM_HOST:PORT PORT_FILE

Listens on a free port of 127.0.0.1 (written to PORT_FILE once listening) and
forwards every request to UPSTREAM (plain HTTP). `GET /__count` answers the body
bytes forwarded so far and the number of requests, `POST /__reset` sets them to
zero; neither is forwarded. For scripts/bench.sh (case 13: bytes a lazy read
fetches), not for production.
"""

import http.client
import http.server
import socketserver
import sys
import threading

UPSTREAM = sys.argv[1]
LOCK = threading.Lock()
TOTAL = {"bytes": 0, "requests": 0}
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _own(self):
        if self.path == "/__count" and self.command == "GET":
            with LOCK:
                body = f"{TOTAL['bytes']} {TOTAL['requests']}\n".encode()
        elif self.path == "/__reset" and self.command == "POST":
            with LOCK:
                TOTAL["bytes"] = TOTAL["requests"] = 0
            body = b"ok\n"
        else:
            return False
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def _forward(self):
        if self._own():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        upstream = http.client.HTTPConnection(UPSTREAM, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response_only(response.status, response.reason)
            known = response.getheader("Content-Length")
            for k, v in response.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            if known is None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            sent = 0
            if self.command != "HEAD":
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
            with LOCK:
                TOTAL["bytes"] += sent
                TOTAL["requests"] += 1
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    server = Server(("127.0.0.1", 0), Handler)
    with open(sys.argv[2], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
