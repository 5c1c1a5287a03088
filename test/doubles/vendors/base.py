"""What every vendor double shares: configuration, seeding, async job programs,
credential checks.  A vendor module subclasses Base and cites its documentation."""

import base64
import itertools


class Answer:
    """A vendor's answer: status, JSON-able (or bytes/str) body, headers."""

    def __init__(self, status, body=None, headers=None, content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


class Base:
    CONFIG = {}                 # credential and option names -> defaults
    JOB_STATES = []             # default states an async job reports, one per read

    def __init__(self):
        self.config = dict(self.CONFIG)
        self.records = []
        self.jobs = {}
        self.job_states = list(self.JOB_STATES)
        self.page_size = None
        self.ids = itertools.count(1)

    def configure(self, obj):
        unknown = set(obj) - set(self.CONFIG)
        if unknown:
            raise ValueError("unknown settings: %s (allowed: %s)"
                             % (", ".join(sorted(unknown)), ", ".join(sorted(self.CONFIG))))
        self.config.update(obj)

    def seed(self, records):
        for r in records:
            self.records.append(self.new_record(dict(r)))

    def new_record(self, r):
        return r

    def control(self, item):
        for key, value in item.items():
            if key == "job_states":
                if not (isinstance(value, list) and value
                        and all(s in self.all_job_states() for s in value)):
                    raise ValueError("job_states must be a non-empty list of %s"
                                     % ", ".join(self.all_job_states()))
                self.job_states = list(value)
            elif key == "page_size":
                if type(value) is not int or value < 1:
                    raise ValueError("page_size must be a positive integer")
                self.page_size = value
            else:
                raise ValueError("unknown control key %r" % key)

    def all_job_states(self):
        return []

    def state(self):
        return {"records": self.records, "jobs": self.jobs}

    def new_job(self, job):
        job["program"] = list(self.job_states)
        job["reads"] = 0
        self.jobs[job["id"]] = job
        return job

    def job_step(self, job):
        """The state a status read reports now; the program's last state stays."""
        prog = job["program"]
        s = prog[min(job["reads"], len(prog) - 1)]
        job["reads"] += 1
        job["state"] = s
        return s

    def next_id(self, prefix):
        return "%s%06d" % (prefix, next(self.ids))


def bearer(req):
    auth = req.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def basic(req):
    """(user, password) of a Basic Authorization header, or None."""
    auth = req.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password
