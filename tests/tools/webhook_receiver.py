#!/usr/bin/env python3
"""A webhook receiver for Keel's notification tests (tests/integration/notify.sh).

  webhook_receiver.py --port-file FILE --log FILE [--fail PATH=N]...

Listens on 127.0.0.1 (a free port, written to --port-file once it listens)
and appends one JSON line per POST to --log:

  {"path": "/hook", "id": "<X-Keel-Notification-Id or null>", "status": 200,
   "headers": {"name": "value", ...}, "body": <the parsed JSON body, or the text>}

Answers 200, except:
  --fail PATH=N   the first N POSTs to PATH get 500 (a receiver that is down,
                  then back), and are logged with their status;
  /status/NNN     always answers NNN (a receiver refusing the request).
Stops on SIGTERM or SIGINT.
"""
import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail", action="append", default=[], metavar="PATH=N")
    args = ap.parse_args()

    failures = {}
    for f in args.fail:
        path, _, n = f.rpartition("=")
        failures[path] = int(n)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: the log file is the record
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n).decode("utf-8", "replace")
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            with lock:
                status = 200
                if self.path.startswith("/status/"):
                    status = int(self.path[len("/status/"):])
                elif failures.get(self.path, 0) > 0:
                    failures[self.path] -= 1
                    status = 500
                rec = {"path": self.path, "id": self.headers.get("X-Keel-Notification-Id"),
                       "status": status,
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": body}
                with open(args.log, "a") as f:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
            answer = b'{"ok":true}' if status == 200 else b'{"error":"test receiver says no"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
