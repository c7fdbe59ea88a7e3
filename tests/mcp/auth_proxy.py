"""A tiny reverse proxy on 127.0.0.1 that adds `Authorization: Bearer TOKEN` to every request.

Test setup only: the MCP Inspector CLI 0.15 and the conformance suite cannot send headers, and
the agentbus server refuses requests without a token. The proxy plays the part of a client's
credential store; the server is not changed.

  auth_proxy.py LISTEN_PORT UPSTREAM_PORT TOKEN
"""
import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN, UPSTREAM, TOKEN = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "content-length"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Authorization"] = f"Bearer {TOKEN}"
        # The Host header passes through unchanged, so the server's DNS-rebinding check sees it.
        up = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=300)
        up.request(self.command, self.path, body=body, headers=headers)
        resp = up.getresponse()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            up.close()
        self.close_connection = True

    do_GET = do_POST = do_DELETE = forward

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up on a long-lived event stream is normal here.
        pass


Server(("127.0.0.1", LISTEN), Proxy).serve_forever()
