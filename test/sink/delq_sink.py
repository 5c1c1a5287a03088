#!/usr/bin/python3
"""delq_sink: a recording, fault-injecting HTTP destination for delq's tests and demo.

One process plays many destinations: the first path segment of a request names
its destination ("/crm/hook" -> "crm").  Every request to a destination is
recorded (and appended as one JSON line to --log) and answered according to the
behaviour set for it through the control API; the default is 200 {"ok":true}.

    delq_sink.py [--port N] [--port-file F] [--log F] [--secret whsec_...]
                 [--hang-max SECONDS] [--keep N] [--watch-parent] [--seed N]

Control API (paths starting with "/_" are never recorded):
    POST /_control/<dest>  {"status":503,"retry_after":"2","times":1}
                           behaviour keys: status, retry_after, delay_ms, hang,
                           body, body_bytes, reset, headers, times (absent: until
                           changed), for_ms (a time window instead of a count),
                           random (a list of behaviours, each with a "chance",
                           one drawn per request; else the default 200);
                           or {"sequence":[{...},{...}]} (each step once
                           unless it has "times" or "for_ms"), then the default again
    GET  /_control/<dest>  the behaviours still to come
    GET  /_requests[?dest=<d>][&since=<seq>]   recorded requests, oldest first
    GET  /_stats           {"total":N,"dests":{"<d>":{"count":N,"status":{"200":N}}}}
    POST /_reset           forget records and behaviours, end hanging requests

Python 3 standard library only; listens on 127.0.0.1 only.
"""

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BEHAVIOUR_KEYS = {"status", "retry_after", "delay_ms", "hang", "body",
                  "body_bytes", "reset", "headers", "times", "for_ms", "random"}
# what a behaviour drawn from a "random" list may say
ANSWER_KEYS = BEHAVIOUR_KEYS - {"times", "for_ms", "random"} | {"chance"}
FILLER = memoryview(b"x" * 65536)


def check_behaviour(b, allowed=BEHAVIOUR_KEYS):
    """Reject typos and nonsense early: a test must not silently get a 200."""
    if not isinstance(b, dict):
        raise ValueError("a behaviour must be a JSON object")
    unknown = set(b) - allowed
    if unknown:
        raise ValueError("unknown behaviour keys: %s (allowed: %s)"
                         % (", ".join(sorted(unknown)), ", ".join(sorted(allowed))))
    if "times" in b and "for_ms" in b:
        raise ValueError('"times" and "for_ms" do not go together')
    if "random" in b:
        if set(b) - {"random", "times", "for_ms"}:
            raise ValueError('"random" goes only with "times" or "for_ms"')
        if not isinstance(b["random"], list) or not b["random"]:
            raise ValueError('"random" must be a non-empty list of behaviours')
        total = 0.0
        for choice in b["random"]:
            check_behaviour(choice, ANSWER_KEYS)
            chance = choice.get("chance")
            if type(chance) not in (int, float) or not 0 < chance <= 1:
                raise ValueError('each "random" behaviour needs a "chance" above 0, at most 1')
            total += chance
        if total > 1 + 1e-9:
            raise ValueError('the chances of "random" add up to more than 1')
    status = b.get("status", 200)
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError("status must be an integer from 100 to 599")
    for key in ("delay_ms", "body_bytes", "times", "for_ms"):
        if key in b and (type(b[key]) is not int or b[key] < 0):
            raise ValueError("%s must be a non-negative integer" % key)
    if not isinstance(b.get("headers", {}), dict):
        raise ValueError("headers must be an object")
    return b


def parse_program(spec):
    """A control body as a list of Steps."""
    if isinstance(spec, list):
        spec = {"sequence": spec}
    if isinstance(spec, dict) and "sequence" in spec:
        if set(spec) != {"sequence"} or not isinstance(spec["sequence"], list):
            raise ValueError('"sequence" must be a list and the only key')
        return [Step(check_behaviour(b), 1) for b in spec["sequence"]]
    check_behaviour(spec)
    return [Step(spec, None)]


class Step:
    """One behaviour of a program and how long it lasts: "times" requests,
    "for_ms" milliseconds from when it became the current step (set, or the
    step before it ended), or until changed."""

    def __init__(self, behaviour, default_times):
        self.behaviour = behaviour
        self.remaining = behaviour.get("times", None if "for_ms" in behaviour else default_times)
        self.ends_at = None             # for_ms: set when the step starts

    def start(self, at):
        if "for_ms" in self.behaviour:
            self.ends_at = at + self.behaviour["for_ms"] / 1000.0

    def over(self, now):
        return self.remaining == 0 or (self.ends_at is not None and now >= self.ends_at)

    def describe(self):
        d = {"behaviour": self.behaviour, "remaining": self.remaining}
        if self.ends_at is not None:
            d["ends_at"] = round(self.ends_at, 6)
        return d


class State:
    """Everything the handler threads share, behind one lock."""

    def __init__(self, secret, log_path, hang_max, keep, seed=None):
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self.key = None
        if secret:
            if not secret.startswith("whsec_"):
                raise SystemExit("delq_sink: --secret must look like whsec_<base64 key>")
            self.key = base64.b64decode(secret[len("whsec_"):])
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.hang_max = hang_max
        self.keep = keep or None
        self.generation = 0         # bumped by reset and shutdown: ends hangs
        self.clear()

    def clear(self):
        self.records = collections.deque(maxlen=self.keep)
        self.seq = 0
        self.stats = {}
        self.programs = {}

    def reset(self):
        with self.lock:
            self.clear()
            self.generation += 1

    def set_program(self, dest, program):
        with self.lock:
            if program:
                program[0].start(time.time())
            self.programs[dest] = program

    def _current(self, dest, now):
        """The program's current step (None: the default), dropping those that
        are over; a for_ms step after a timed one starts when that one ended."""
        program = self.programs.get(dest, [])
        while program and program[0].over(now):
            done = program.pop(0)
            if program:
                program[0].start(done.ends_at if done.ends_at is not None
                                 and done.remaining != 0 else now)
        return program[0] if program else None

    def program(self, dest):
        with self.lock:
            self._current(dest, time.time())
            return [step.describe() for step in self.programs.get(dest, [])]

    def next_behaviour(self, dest):
        with self.lock:
            step = self._current(dest, time.time())
            if step is None:
                return {}
            if step.remaining is not None:
                step.remaining -= 1
            b = step.behaviour
            if "random" in b:           # one draw: the first choice it falls in
                draw = self.random.random()
                for choice in b["random"]:
                    draw -= choice["chance"]
                    if draw < 0:
                        return choice
                return {}
            return b

    def record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.records.append(rec)
            d = self.stats.setdefault(rec["dest"], {"count": 0, "status": {}})
            d["count"] += 1
            label = str(rec["status"]) if rec["outcome"] == "answered" else rec["outcome"]
            d["status"][label] = d["status"].get(label, 0) + 1
            if self.log:
                self.log.write(json.dumps(rec) + "\n")
                self.log.flush()

    def requests(self, dest, since):
        with self.lock:
            return [r for r in self.records
                    if (dest is None or r["dest"] == dest) and r["seq"] > since]

    def verify(self, headers, body):
        """Standard Webhooks v1: None without a secret, else whether any v1 entry matches."""
        if self.key is None:
            return None
        wid = headers.get("webhook-id")
        wts = headers.get("webhook-timestamp")
        sig = headers.get("webhook-signature")
        if not (wid and wts and sig):
            return False
        mac = hmac.new(self.key, ("%s.%s." % (wid, wts)).encode() + body, hashlib.sha256)
        expected = base64.b64encode(mac.digest())
        ok = False
        for entry in sig.split():
            version, _, value = entry.partition(",")
            if version == "v1" and hmac.compare_digest(value.encode(), expected):
                ok = True
        return ok


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive; every answer has a Content-Length
    server_version = "delq-sink/1"

    def setup(self):
        super().setup()
        self.served = 0                 # requests on this connection so far

    def log_request(self, code="-", size="-"):
        pass                            # the JSON log says it all

    def do_GET(self):
        self.served += 1
        url = urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith("/_"):
            self.control_api(url, body)
        else:
            self.destination(url, body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status, obj, extra=None):
        payload = json.dumps(obj).encode()
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def control_api(self, url, body):
        state = self.server.state
        query = parse_qs(url.query)
        route = (self.command, url.path.split("/")[1])
        if route == ("POST", "_reset"):
            state.reset()
            return self.send_json(200, {"ok": True})
        if route == ("GET", "_requests"):
            dest = query.get("dest", [None])[0]
            since = int(query.get("since", ["0"])[0])
            return self.send_json(200, state.requests(dest, since))
        if route == ("GET", "_stats"):
            with state.lock:
                stats = json.loads(json.dumps(state.stats))
            return self.send_json(200, {"total": state.seq, "dests": stats})
        dest = url.path[len("/_control/"):]
        if route[1] == "_control" and dest and "/" not in dest:
            if self.command == "GET":
                return self.send_json(200, state.program(dest))
            try:
                state.set_program(dest, parse_program(json.loads(body or b"{}")))
            except ValueError as e:
                return self.send_json(400, {"error": str(e)})
            return self.send_json(200, {"ok": True})
        self.send_json(404, {"error": "no such control path: %s %s" % (self.command, url.path)})

    def destination(self, url, body):
        state = self.server.state
        dest = url.path.lstrip("/").split("/", 1)[0]
        b = state.next_behaviour(dest)
        status = b.get("status", 200)
        outcome = "hang" if b.get("hang") else "reset" if b.get("reset") else "answered"
        state.record({
            "time": round(time.time(), 6),
            "dest": dest,
            "method": self.command,
            "path": self.path,
            "headers": self.header_dict(),
            "body": body.decode("utf-8", "replace"),
            "status": None if outcome == "hang" else status,
            "outcome": outcome,
            "signature_ok": state.verify(self.headers, body),
            "client": list(self.client_address[:2]),
            "conn_request": self.served,
        })
        if b.get("delay_ms"):
            time.sleep(b["delay_ms"] / 1000.0)
        if outcome == "hang":
            return self.hang()
        payload = b.get("body")
        if payload is None:
            payload = {"ok": status < 300}
        payload = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        size = b.get("body_bytes") or len(payload)
        self.send_response(status)
        if "retry_after" in b:
            self.send_header("Retry-After", str(b["retry_after"]))
        for name, value in b.get("headers", {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Type", "application/octet-stream" if b.get("body_bytes")
                         else "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            if outcome == "reset":
                part = FILLER[:min(size // 2, len(FILLER))] if b.get("body_bytes") else payload[:size // 2]
                self.reset(part)
            elif b.get("body_bytes"):
                self.stream(size)
            else:
                self.wfile.write(payload)
        except OSError:                 # the client went away: fine, it is a test
            self.close_connection = True

    def header_dict(self):
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        return headers

    def stream(self, size):
        """Send size filler bytes without ever holding them."""
        while size > 0:
            n = min(size, len(FILLER))
            self.wfile.write(FILLER[:n])
            size -= n

    def reset(self, part):
        """Send part of the promised body, then abort the connection with a RST."""
        self.wfile.write(part)
        time.sleep(0.05)                # let the part reach the client first
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()              # drop the file's reference so close() is real
        self.connection.close()

    def hang(self):
        """Answer nothing until the client gives up, a reset, shutdown or --hang-max."""
        state = self.server.state
        generation = state.generation
        deadline = time.monotonic() + state.hang_max
        self.close_connection = True
        while state.generation == generation and time.monotonic() < deadline:
            if select.select([self.connection], [], [], 0.2)[0]:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return          # the client closed
                except OSError:
                    return
                time.sleep(0.2)         # pipelined bytes: keep ignoring them


class Server(ThreadingHTTPServer):
    request_queue_size = 128            # many concurrent deliveries must not wait for SYN retries
    daemon_threads = True


def watch_parent(ppid):
    while os.getppid() == ppid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def main():
    ap = argparse.ArgumentParser(description="Recording, fault-injecting webhook destination.")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    ap.add_argument("--port-file", help="write the chosen port here once listening")
    ap.add_argument("--log", help="append one JSON line per received request")
    ap.add_argument("--secret", help="whsec_<base64 key>: verify webhook-signature")
    ap.add_argument("--hang-max", type=float, default=600, help="longest hang, seconds")
    ap.add_argument("--keep", type=int, default=0, help="records kept in memory (0: all)")
    ap.add_argument("--watch-parent", action="store_true", help="exit when the parent exits")
    ap.add_argument("--seed", type=int, help="seed for \"random\" behaviours (default: from the OS)")
    args = ap.parse_args()

    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.secret, args.log, args.hang_max, args.keep, args.seed)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(args.port_file + ".tmp", args.port_file)
    print("delq_sink listening on 127.0.0.1:%d" % port, flush=True)
    if args.watch_parent:
        threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        with server.state.lock:
            server.state.generation += 1
            if server.state.log:
                server.state.log.close()
                server.state.log = None


if __name__ == "__main__":
    sys.exit(main())
