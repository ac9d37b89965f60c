#!/usr/bin/env python3
"""A stand-in SMS provider for the boot test: accepts the appliance's JSON POSTs and
appends each body, one per line, to a file. Usage: mock_sms.py PORT FILE"""
import http.server
import sys

port, path = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with open(path, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
