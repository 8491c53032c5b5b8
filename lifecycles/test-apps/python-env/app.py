"""A CF-style app: serves $PORT and answers GET with the environment it was started with."""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

KEYS = ["PORT", "HOME", "TMPDIR", "DEPS_DIR", "VCAP_APPLICATION", "VCAP_SERVICES",
        "PYTHONUNBUFFERED", "PYTHON_BUILDPACK_PROFILE", "USER_VAR"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        env = {k: os.environ.get(k) for k in KEYS}
        env["cwd"] = os.getcwd()
        env["uid"] = os.getuid()
        try:
            env["vcap_application"] = json.loads(os.environ.get("VCAP_APPLICATION", "{}"))
        except ValueError as e:
            env["vcap_application"] = "invalid: %s" % e
        body = json.dumps(env, sort_keys=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("request: " + fmt % args)


if __name__ == "__main__":
    port = int(os.environ["PORT"])
    print("listening on %d" % port)
    HTTPServer(("0.0.0.0", port), Handler).serve_forever()
