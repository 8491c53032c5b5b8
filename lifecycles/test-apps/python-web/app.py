"""The app the push tests deploy: says which instance and version answered; POST /exit crashes it."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = open("VERSION").read().strip() if os.path.exists("VERSION") else "1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({
            "index": os.environ.get("CF_INSTANCE_INDEX"),
            "guid": os.environ.get("CF_INSTANCE_GUID"),
            "version": VERSION,
            "greeting": os.environ.get("GREETING"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path == "/exit":
            print("exiting on request", flush=True)
            os._exit(3)
        self.send_error(404)

    def log_message(self, fmt, *args):
        print("served " + fmt % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    print("version %s listening on %d" % (VERSION, port), flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
