#!/usr/bin/env python3
"""Local webhook receiver for test/unit/run; each path prefix is one behaviour.

  http_sink.py http <portfile> <log>                     plain HTTP
  http_sink.py tls <portfile> <log> <cert> <key> <ca> <none|require>
  http_sink.py blackhole <portfile>                      a listener whose
      accept queue is full, so connecting to it times out

Listens on 127.0.0.1 on an ephemeral port and writes the port to <portfile>.
Every POST is appended to <log> as one JSON line (headers, body, client port).
"""
import json
import os
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
LOG = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    wbufsize = -1               # one write per response: no Nagle stalls

    def log_message(self, *args):
        pass

    def reply(self, code, body=b'', headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, body):
        cert = getattr(self.connection, 'getpeercert', lambda: None)()
        with LOCK:
            LOG.write(json.dumps({
                't': time.time(), 'path': self.path,
                'port': self.client_address[1],
                'headers': [[k, v] for k, v in self.headers.items()],
                'body': body.decode(), 'client_cert': bool(cert)}) + '\n')
            LOG.flush()

    def do_POST(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.record(body)
        part = url.path.split('/')[1:]
        kind = part[0]
        if kind == 'ok':
            self.reply(200, b'ok')
        elif kind == 'status':          # /status/<code>[?ra=<Retry-After>]
            hs = [('Retry-After', query['ra'][0])] if 'ra' in query else []
            text = 'error body %s\n\x01\x7f caf\u00e9 \u20ac' % part[1]
            self.reply(int(part[1]), text.encode(), hs)
        elif kind == 'empty':           # /empty/<code>: no body
            self.reply(int(part[1]))
        elif kind == 'slow':            # /slow/<seconds>
            time.sleep(float(part[1]))
            self.reply(200, b'slow ok')
        elif kind == 'hang':
            time.sleep(3600)
        elif kind == 'exact':           # /exact/<n>: a 200 with n bytes
            self.reply(200, b'y' * int(part[1]))
        elif kind == 'chunked':         # 1 MiB, no Content-Length
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b'4000\r\n' + b'z' * 16384 + b'\r\n')
                    self.wfile.flush()
                self.wfile.write(b'0\r\n\r\n')
            except OSError:
                pass
            self.close_connection = True
        elif kind == 'redirect':
            self.reply(302, b'moved', [('Location', '/ok')])
        elif kind == 'long':            # the excerpt cut falls inside "é"
            self.reply(500, ('a' * 199 + '\u00e9' + 'tail' * 100).encode())
        elif kind == 'reset':
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.reply(404, b'nope')


def serve(server, portfile):
    with open(portfile + '.tmp', 'w') as f:
        f.write(str(server.server_address[1]))
    os.rename(portfile + '.tmp', portfile)
    server.serve_forever()


def main():
    global LOG
    mode, portfile = sys.argv[1], sys.argv[2]
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    if mode == 'blackhole':
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        s.listen(0)
        port = s.getsockname()[1]
        fill = []
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(('127.0.0.1', port))
            except BlockingIOError:
                pass
            fill.append(c)
        with open(portfile, 'w') as f:
            f.write(str(port))
        time.sleep(3600)
        return
    LOG = open(sys.argv[3], 'a')
    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    if mode == 'tls':
        cert, key, ca, require = sys.argv[4:8]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = (ssl.CERT_REQUIRED if require == 'require'
                           else ssl.CERT_NONE)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    serve(server, portfile)


if __name__ == '__main__':
    main()
