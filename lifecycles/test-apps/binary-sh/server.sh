#!/usr/bin/env bash
# A "binary" app (any executable): answers every connection on $PORT with a fixed body.
exec python3 -c '
import os, socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        body = ("binary app on port %s (%s)\n" % (os.environ["PORT"], os.environ.get("APP_BINARY"))).encode()
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
socketserver.TCPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
'
