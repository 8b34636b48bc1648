"""A webhook receiver for the compose stack: prints each alert notification it receives as one
JSON line on stdout (`docker compose logs -f alert-sink`) and answers 200.

Both senders post Alertmanager's webhook JSON: Alertmanager (path /alertmanager) for the rules
Prometheus evaluates, and the Ferry server itself (path /ferry, FERRY_ALERT_WEBHOOK_URL) for
the same rules evaluated in the server. Standard library only; replace it with a real receiver.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the http.server hook's name)
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self.send_error(400, "expected a JSON body")
            return
        alerts = body.get("alerts", []) if isinstance(body, dict) else []
        for alert in alerts:
            line = {
                "from": self.path,
                "status": alert.get("status"),
                "labels": alert.get("labels"),
                "summary": (alert.get("annotations") or {}).get("summary"),
            }
            print(json.dumps(line), flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 (health check)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return  # one line per alert above is the log


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9095
    ThreadingHTTPServer(("0.0.0.0", port), Sink).serve_forever()


if __name__ == "__main__":
    main()
