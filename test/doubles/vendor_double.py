#!/usr/bin/python3
"""vendor_double: local test doubles of the vendor APIs that delq's connectors call.

One process plays every vendor of the connector catalogue (connectors/*.json),
each under its own path prefix, so a connector's base_url points at it:

    stripe     http://127.0.0.1:PORT/stripe            (https://api.stripe.com)
    auth0      http://127.0.0.1:PORT/auth0             (https://TENANT.auth0.com)
    mailchimp  http://127.0.0.1:PORT/mailchimp/3.0     (https://DC.api.mailchimp.com/3.0)
    segment    http://127.0.0.1:PORT/segment           (https://api.segmentapis.com)
    hubspot    http://127.0.0.1:PORT/hubspot           (https://api.hubapi.com)
    zendesk    http://127.0.0.1:PORT/zendesk           (https://SUBDOMAIN.zendesk.com)
    sendgrid   http://127.0.0.1:PORT/sendgrid          (https://api.sendgrid.com)
    klaviyo    http://127.0.0.1:PORT/klaviyo           (https://a.klaviyo.com)

Each vendor module in vendors/ implements the endpoints that its connector uses
as the vendor's public API reference documents them (each module cites its
pages): paths, authentication, pagination, answers, status codes and error
bodies.  The vendors keep state (customers, users, contacts, jobs) that a test
seeds and reads back, so a test proves what was really erased.

    vendor_double.py [--port N] [--port-file F] [--log F] [--watch-parent]

Control API (paths starting with "/_", never recorded):
    POST /_config/<vendor>   {"api_key": "..."}  credentials the vendor accepts
                             (keys per vendor: see its module's CONFIG)
    POST /_seed/<vendor>     {"records": [...]}   records the vendor holds
    GET  /_state/<vendor>    what the vendor holds now (records, jobs, tokens)
    POST /_control/<vendor>  faults and job programs, one object or a list:
        {"status": 429, "retry_after": "2", "times": 1, "method": "DELETE",
         "path": "/v1/customers/"}   answer the next matching request (method
                                     and path prefix optional) with that status
                                     and the vendor's documented error body
        {"job_states": ["RUNNING", "FINISHED"]}  each async job created from now
                                     on reports these states, one per status
                                     read, the last one for good
        {"revoke_tokens": true}      (auth0) issued tokens stop working: the
                                     next API call answers 401
        {"page_size": 2}             (paginated lookups) records per page at
                                     most, whatever the client asks
    GET  /_requests[?vendor=V][&since=SEQ]  recorded requests, oldest first
    POST /_reset             forget records, state, faults and configuration

Python 3 standard library only; listens on 127.0.0.1 only.
"""

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vendors.base import Answer  # noqa: E402

VENDORS = ("stripe", "auth0", "mailchimp", "segment", "hubspot", "zendesk",
           "sendgrid", "klaviyo")
FAULT_KEYS = {"status", "retry_after", "times", "method", "path", "body"}


class Request:
    """What a vendor module sees of one HTTP request."""

    def __init__(self, method, path, query, headers, body, base):
        self.method = method
        self.path = path            # below the vendor prefix, e.g. "/v1/customers"
        self.query = query          # parse_qs result: name -> [values]
        self.headers = headers      # lower-cased names
        self.body = body            # bytes
        self.base = base            # absolute URL of the vendor prefix (for next links)

    def arg(self, name, default=None):
        return self.query.get(name, [default])[0]

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            return None

    def form(self):
        return parse_qs(self.body.decode("utf-8", "replace"))


class State:
    """Everything the handler threads share, behind one lock."""

    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.clear()

    def clear(self):
        self.records = []
        self.seq = 0
        self.faults = {v: [] for v in VENDORS}
        self.vendors = {v: importlib.import_module("vendors." + v).Vendor() for v in VENDORS}

    def record(self, rec):
        self.seq += 1
        rec["seq"] = self.seq
        self.records.append(rec)
        if self.log:
            self.log.write(json.dumps(rec) + "\n")
            self.log.flush()

    def next_fault(self, vendor, req):
        """The first fault whose method and path match, used once (or its times)."""
        for f in self.faults[vendor]:
            if f.get("method") and f["method"] != req.method:
                continue
            if f.get("path") and not req.path.startswith(f["path"]):
                continue
            if f["left"] is not None:
                f["left"] -= 1
                if f["left"] <= 0:
                    self.faults[vendor].remove(f)
            return f
        return None


def check_fault(f):
    if not isinstance(f, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(f) - FAULT_KEYS
    if unknown:
        raise ValueError("unknown fault keys: %s (allowed: %s)"
                         % (", ".join(sorted(unknown)), ", ".join(sorted(FAULT_KEYS))))
    if type(f.get("status")) is not int or not 400 <= f["status"] <= 599:
        raise ValueError("a fault needs a status from 400 to 599")
    times = f.get("times", 1)
    if times is not None and (type(times) is not int or times < 1):
        raise ValueError("times must be a positive integer or null (for ever)")
    return dict(f, left=times)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "delq-vendor-double/1"

    def log_request(self, code="-", size="-"):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith("/_"):
            return self.control_api(url, body)
        parts = url.path.split("/", 2)
        vendor = parts[1]
        if vendor not in VENDORS:
            return self.send(Answer(404, {"error": "no vendor %r here (known: %s)"
                                          % (vendor, ", ".join(VENDORS))}))
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = "http://%s:%d" % self.server.server_address[:2]
        req = Request(self.command, "/" + (parts[2] if len(parts) > 2 else ""),
                      parse_qs(url.query, keep_blank_values=True), headers, body,
                      host + "/" + vendor)
        state = self.server.state
        with state.lock:
            mod = state.vendors[vendor]
            fault = state.next_fault(vendor, req)
            if fault:
                ans = mod.fault(req, fault["status"])
                if "body" in fault:
                    ans.body = fault["body"]
                if "retry_after" in fault:
                    ans.headers["Retry-After"] = str(fault["retry_after"])
            else:
                try:
                    ans = mod.handle(req)
                except Exception as e:  # a bug in the double: say so loudly
                    ans = Answer(599, {"double_error": "%s: %s" % (type(e).__name__, e)})
            state.record({
                "time": round(time.time(), 6), "vendor": vendor, "method": req.method,
                "path": req.path, "query": url.query, "headers": headers,
                "body": body.decode("utf-8", "replace"), "status": ans.status,
                "fault": bool(fault),
            })
        self.send(ans)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, ans):
        if ans.body is None:
            payload = b""
        elif isinstance(ans.body, (bytes, str)):
            payload = ans.body.encode() if isinstance(ans.body, str) else ans.body
        else:
            payload = json.dumps(ans.body).encode()
        self.send_response(ans.status)
        for name, value in ans.headers.items():
            self.send_header(name, str(value))
        if payload:
            self.send_header("Content-Type", ans.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    def control_api(self, url, body):
        state = self.server.state
        parts = url.path.split("/")
        verb = parts[1]
        vendor = parts[2] if len(parts) > 2 else None
        try:
            obj = json.loads(body or b"null")
        except ValueError:
            return self.send(Answer(400, {"error": "the body is not JSON"}))
        with state.lock:
            if (self.command, verb) == ("POST", "_reset"):
                state.clear()
                return self.send(Answer(200, {"ok": True}))
            if (self.command, verb) == ("GET", "_requests"):
                q = parse_qs(url.query)
                want = q.get("vendor", [None])[0]
                since = int(q.get("since", ["0"])[0])
                return self.send(Answer(200, [r for r in state.records
                                              if (want is None or r["vendor"] == want)
                                              and r["seq"] > since]))
            if vendor not in VENDORS:
                return self.send(Answer(404, {"error": "no such control path: %s" % url.path}))
            mod = state.vendors[vendor]
            try:
                if (self.command, verb) == ("POST", "_config"):
                    mod.configure(obj or {})
                elif (self.command, verb) == ("POST", "_seed"):
                    mod.seed((obj or {}).get("records", []))
                elif (self.command, verb) == ("GET", "_state"):
                    return self.send(Answer(200, mod.state()))
                elif (self.command, verb) == ("POST", "_control"):
                    for item in obj if isinstance(obj, list) else [obj]:
                        if isinstance(item, dict) and "status" not in item:
                            mod.control(item)
                        else:
                            state.faults[vendor].append(check_fault(item))
                else:
                    return self.send(Answer(404, {"error": "no such control path: %s %s"
                                                  % (self.command, url.path)}))
            except (ValueError, KeyError, TypeError) as e:
                return self.send(Answer(400, {"error": str(e)}))
        return self.send(Answer(200, {"ok": True}))


class Server(ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True


def watch_parent(ppid):
    while os.getppid() == ppid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def main():
    ap = argparse.ArgumentParser(description="Local doubles of the vendor APIs of delq's connectors.")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    ap.add_argument("--log", help="append one JSON line per received request")
    ap.add_argument("--watch-parent", action="store_true", help="exit when the parent exits")
    args = ap.parse_args()

    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.log)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(args.port_file + ".tmp", args.port_file)
    print("vendor_double listening on 127.0.0.1:%d" % port, flush=True)
    if args.watch_parent:
        threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
