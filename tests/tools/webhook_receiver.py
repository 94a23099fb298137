"""A webhook receiver for the tests: verifies every request with the Standard Webhooks reference
library (PyPI `standardwebhooks`, an implementation independent of Lectern's), and records it.

    python webhook_receiver.py --log FILE [--secret whsec_...]... [--fail-first N] [--redirect-to URL]

Prints the port it listens on (127.0.0.1) as its first line. Each request appends one JSON line to
FILE: {"path", "webhook_id", "type", "verified", "status", "body"}. With --fail-first N, the first N
requests of each webhook-id are answered 500 (then 204). With --redirect-to, every request is
answered 307 to that URL.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--redirect-to")
    args = ap.parse_args()
    hooks = [Webhook(s) for s in args.secret]
    seen = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n)
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = False
            for h in hooks:
                try:
                    h.verify(body, headers)
                    verified = True
                    break
                except WebhookVerificationError:
                    pass
            wid = headers.get("webhook-id")
            with lock:
                seen[wid] = seen.get(wid, 0) + 1
                count = seen[wid]
            if args.redirect_to:
                status = 307
            elif count <= args.fail_first:
                status = 500
            else:
                status = 204
            try:
                event_type = json.loads(body).get("type")
            except ValueError:
                event_type = None
            with lock, open(args.log, "a") as f:
                f.write(json.dumps({"path": self.path, "webhook_id": wid, "type": event_type,
                                    "verified": verified, "status": status,
                                    "body": body.decode("utf-8", "replace")}) + "\n")
            self.send_response(status)
            if args.redirect_to:
                self.send_header("Location", args.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
