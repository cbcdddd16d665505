"""A webhook receiver on loopback for the end-to-end tests.

Each request is verified with the reference `standardwebhooks` library (PyPI), never with
ckrv's own code, against every secret in SECRETS (one per line, read per request so a test can
rotate). What the receiver does next is read per request from MODE: `ok` answers 204, `fail`
answers 500, `slow N` waits N seconds and then answers 204. Every request that was answered
2xx and verified is appended to OUT as one JSON line: its webhook-id, event type, job id and
which secret verified it. Writes its port to PORT_FILE once it listens.

usage: receiver.py PORT_FILE SECRETS MODE OUT
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT_FILE, SECRETS, MODE, OUT = sys.argv[1:5]


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified_with = None
        for index, secret in enumerate(read(SECRETS).split()):
            try:
                Webhook(secret).verify(body, headers)
                verified_with = index
                break
            except WebhookVerificationError:
                continue
        if verified_with is None:
            self.send_response(401)
            self.end_headers()
            return
        mode = read(MODE).split() or ["ok"]
        if mode[0] == "fail":
            self.send_response(500)
            self.end_headers()
            return
        if mode[0] == "slow":
            time.sleep(float(mode[1]))
        event = json.loads(body)
        with open(OUT, "a", encoding="utf-8") as out:
            out.write(
                json.dumps(
                    {
                        "id": headers["webhook-id"],
                        "type": event["type"],
                        "job": event["data"]["job"]["id"],
                        "verified_with": verified_with,
                    }
                )
                + "\n"
            )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
