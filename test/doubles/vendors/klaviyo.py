"""Klaviyo double: a data-privacy deletion job for the profiles with an e-mail.

Follows Klaviyo's API reference:
  https://developers.klaviyo.com/en/reference/request_profile_deletion
      POST /api/data-privacy-deletion-jobs (JSON:API, Content-Type
      application/vnd.api+json; required "revision" header YYYY-MM-DD[.suffix])
      {data: {type: data-privacy-deletion-job, attributes: {profile: {data:
      {type: profile, attributes: {email}}}}}} -> 202 Accepted, no body; exactly
      one of email, phone_number or id, else an error; every matching profile is
      deleted, asynchronously (Klaviyo documents no status endpoint for the job)
  https://developers.klaviyo.com/en/docs/authenticate_
      Authorization: Klaviyo-API-Key <private key>
  https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling
      429 with Retry-After; JSON:API errors {errors: [{id, status, code, title,
      detail, source}]}; 400 invalid, 401 not_authenticated, 5xx
"""

import re
import uuid

from vendors.base import Answer, Base

REVISION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


def errors(status, code, title, detail, pointer=None):
    err = {"id": str(uuid.uuid4()), "status": status, "code": code, "title": title,
           "detail": detail}
    if pointer:
        err["source"] = {"pointer": pointer}
    return Answer(status, {"errors": [err]}, content_type="application/vnd.api+json")


class Vendor(Base):
    CONFIG = {"api_key": "pk_delq"}

    def new_record(self, r):
        r.setdefault("id", "01HPROFILE%06d" % next(self.ids))
        return r

    def fault(self, req, status):
        if status == 429:
            ans = errors(429, "throttled", "Request was throttled.",
                         "Request was throttled. Expected available in 1 second.")
            ans.headers = {"Retry-After": "1"}
            return ans
        return errors(status, "error", "Fault.", "fault injected by the test")

    def handle(self, req):
        if req.headers.get("authorization") != "Klaviyo-API-Key " + self.config["api_key"]:
            return errors(401, "not_authenticated", "Authentication credentials were not provided.",
                          "Missing or invalid private key.")
        if not REVISION.match(req.headers.get("revision", "")):
            return errors(400, "invalid", "Invalid input.",
                          "The revision header is required: YYYY-MM-DD[.suffix]")
        if req.method == "POST" and req.path.rstrip("/") == "/api/data-privacy-deletion-jobs":
            if not req.headers.get("content-type", "").startswith(
                    ("application/vnd.api+json", "application/json")):
                return errors(415, "unsupported_media_type", "Unsupported media type.",
                              "Use application/vnd.api+json")
            return self.deletion_job(req.json())
        return errors(404, "not_found", "Not found.", "No such endpoint")

    def deletion_job(self, body):
        try:
            assert body["data"]["type"] == "data-privacy-deletion-job"
            prof = body["data"]["attributes"]["profile"]["data"]
            assert prof["type"] == "profile"
            ids = dict(prof.get("attributes") or {})
            if "id" in prof:
                ids["id"] = prof["id"]
        except (KeyError, TypeError, AssertionError):
            return errors(400, "invalid", "Invalid input.", "Malformed deletion job",
                          "/data")
        ids = {k: v for k, v in ids.items() if k in ("email", "phone_number", "id")}
        if len(ids) != 1:
            return errors(400, "invalid", "Invalid input.",
                          "Exactly one of email, phone_number or id is required",
                          "/data/attributes/profile/data/attributes")
        (field, value), = ids.items()
        match = (lambda p: str(p.get(field, "")).lower() == str(value).lower()) \
            if field == "email" else (lambda p: p.get(field) == value)
        self.jobs[str(uuid.uuid4())] = {"field": field, "deleted": sum(map(match, self.records))}
        self.records = [p for p in self.records if not match(p)]
        return Answer(202)
