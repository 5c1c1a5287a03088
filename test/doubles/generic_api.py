#!/usr/bin/python3
"""generic_api: a small JSON records API for the tests of delq's templated
destinations (docs/connectors.md, test/t/071_templates.pl).

It is no vendor's API: it is the shape most deletion APIs share, so that the
template engine is tested apart from the connector catalogue (the vendor
doubles are test/doubles/vendor_double.py).  Each record has an id and an
e-mail; the API finds them, deletes them, or deletes them by an asynchronous
job, behind a static API key or OAuth 2.0 client credentials (RFC 6749
section 4.4, token answer as in section 5.1).

    generic_api.py [--port N] [--port-file F] [--watch-parent]

API (JSON; every /api call needs "Authorization: Bearer <key or token>",
otherwise 401 {"error": "unauthorized"}):
    POST   /oauth/token        form grant_type=client_credentials, client_id,
                               client_secret -> {"access_token", "token_type",
                               "expires_in"}; wrong client: 401
    GET    /api/records?email=E[&cursor=C]   {"data": [{"id", "email"}...],
                               "next_cursor": id or null}, page_size per page
    DELETE /api/records/<id>   204, or 404 {"error": "not found"}
    POST   /api/jobs           {"email": E} -> 202 {"id": "job_N"}; the job
                               deletes E's records when it finishes
    GET    /api/jobs/<id>      {"id", "status": "pending"|"done"|"failed"}:
                               "pending" for job_polls reads, then job_result

Control (never recorded):
    POST /_seed     {"records": [{"id", "email"}, ...]}
    POST /_config   any of {"api_key", "client_id", "client_secret",
                    "token_ttl", "page_size", "job_polls", "job_result",
                    "revoke_tokens": true}
    POST /_fault    {"method", "path" (prefix), "status", "retry_after",
                    "delay_ms", "times"}: the next matching calls are
                    delayed and/or answered with status
    GET  /_state    {"records", "jobs", "tokens"}
    GET  /_requests every recorded call: method, path, query, headers, body

Python 3 standard library only; listens on 127.0.0.1 only.
"""

import argparse
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.jobs = {}
        self.tokens = {}
        self.requests = []
        self.faults = []
        self.config = {"api_key": "key-1", "client_id": "cid", "client_secret": "csecret",
                       "token_ttl": 3600, "page_size": 2, "job_polls": 1, "job_result": "done"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        st = self.server.state
        if url.path.startswith("/_"):
            return self.control(url.path, body)
        with st.lock:
            st.requests.append({"method": self.command, "path": url.path, "query": url.query,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode("utf-8", "replace")})
            fault = None
            for f in st.faults:
                if f.get("method", self.command) == self.command and url.path.startswith(f.get("path", "")):
                    fault = f
                    f["times"] = f.get("times", 1) - 1
                    if f["times"] <= 0:
                        st.faults.remove(f)
                    break
        if fault and fault.get("delay_ms"):
            time.sleep(fault["delay_ms"] / 1000.0)
        if fault and fault.get("status"):
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            return self.send(fault["status"], {"error": "fault"}, headers)
        with st.lock:
            status, answer = self.api(st, self.command, url, body)
        self.send(status, answer)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def api(self, st, method, url, body):
        path, query = url.path, parse_qs(url.query)
        if path == "/oauth/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if (form.get("grant_type") != "client_credentials"
                    or form.get("client_id") != st.config["client_id"]
                    or form.get("client_secret") != st.config["client_secret"]):
                return 401, {"error": "invalid_client"}
            token = "tok_" + secrets.token_hex(8)
            st.tokens[token] = time.time() + st.config["token_ttl"]
            return 200, {"access_token": token, "token_type": "Bearer",
                         "expires_in": st.config["token_ttl"]}
        auth = self.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else None
        if given != st.config["api_key"] and st.tokens.get(given, 0) < time.time():
            return 401, {"error": "unauthorized"}
        if path == "/api/records" and method == "GET":
            email = query.get("email", [""])[0]
            mine = [r for r in st.records if r["email"] == email]
            cursor = query.get("cursor", [None])[0]
            start = next((i + 1 for i, r in enumerate(mine) if r["id"] == cursor), 0) if cursor else 0
            page = mine[start:start + st.config["page_size"]]
            more = start + len(page) < len(mine)
            return 200, {"data": page, "next_cursor": page[-1]["id"] if more and page else None}
        if path.startswith("/api/records/") and method == "DELETE":
            rid = path[len("/api/records/"):]
            found = [r for r in st.records if r["id"] == rid]
            if not found:
                return 404, {"error": "not found"}
            st.records.remove(found[0])
            return 204, None
        if path == "/api/jobs" and method == "POST":
            email = json.loads(body or b"{}").get("email")
            if not email:
                return 400, {"error": "email required"}
            jid = "job_%d" % (len(st.jobs) + 1)
            st.jobs[jid] = {"id": jid, "email": email, "reads": 0}
            return 202, {"id": jid}
        if path.startswith("/api/jobs/") and method == "GET":
            job = st.jobs.get(path[len("/api/jobs/"):])
            if job is None:
                return 404, {"error": "not found"}
            job["reads"] += 1
            status = "pending" if job["reads"] <= st.config["job_polls"] else st.config["job_result"]
            if status == "done":
                st.records = [r for r in st.records if r["email"] != job["email"]]
            return 200, {"id": job["id"], "status": status}
        return 404, {"error": "no such endpoint"}

    def control(self, path, body):
        st = self.server.state
        obj = json.loads(body or b"{}")
        with st.lock:
            if path == "/_seed":
                st.records.extend(obj["records"])
            elif path == "/_config":
                if obj.pop("revoke_tokens", False):
                    st.tokens.clear()
                st.config.update(obj)
            elif path == "/_fault":
                st.faults.append(obj)
            elif path == "/_state":
                return self.send(200, {"records": st.records, "jobs": st.jobs, "tokens": list(st.tokens)})
            elif path == "/_requests":
                return self.send(200, st.requests)
            else:
                return self.send(404, {"error": "no such control path"})
        self.send(200, {"ok": True})

    def send(self, status, answer, headers=None):
        payload = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--watch-parent", action="store_true")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State()
    if args.watch_parent:
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % server.server_address[1])
        os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
