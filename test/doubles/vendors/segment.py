"""Segment Public API double: a workspace regulation (delete and suppress by user
id), then its status.

Follows Segment's Public API reference:
  https://docs.segmentapis.com/tag/Deletion-and-Suppression
      POST /regulations {regulationType, subjectType, subjectIds} ->
      200 {data: {regulateId}}; regulationType one of DELETE_INTERNAL, DELETE_ONLY,
      SUPPRESS_ONLY, SUPPRESS_WITH_DELETE, SUPPRESS_WITH_DELETE_INTERNAL,
      DELETE_ARCHIVE_ONLY, UNSUPPRESS; subjectType USER_ID or ANONYMOUS_ID (workspace
      regulations also OBJECT_ID); a bad body -> 422 "Validation failure"
      GET /regulations/{regulateId} -> {data: {regulation: {id, workspaceId,
      overallStatus, createdAt, finishedAt, streamStatus}}}; overallStatus one of
      INITIALIZED, RUNNING, FINISHED, PARTIAL_SUCCESS, FAILED, INVALID, NOT_SUPPORTED
      (enum as in segmentio/public-api-sdk-python segment_public_api/models/regulation.py)
  https://docs.segmentapis.com/tag/Getting-Started#section/Authentication
      Authorization: Bearer <token>
  https://docs.segmentapis.com/tag/Getting-Started#section/Errors
      {errors: [{type, message}]}; 401, 404, 422, 429 "Too many requests"
Deletion itself is asynchronous; the double reports the states a test programs.
"""

import re
import time

from vendors.base import Answer, Base, bearer

TYPES = {"DELETE_INTERNAL", "DELETE_ONLY", "SUPPRESS_ONLY", "SUPPRESS_WITH_DELETE",
         "SUPPRESS_WITH_DELETE_INTERNAL", "DELETE_ARCHIVE_ONLY", "UNSUPPRESS"}
SUBJECTS = {"USER_ID", "ANONYMOUS_ID", "OBJECT_ID"}
STATES = ["INITIALIZED", "RUNNING", "FINISHED", "PARTIAL_SUCCESS", "FAILED", "INVALID",
          "NOT_SUPPORTED"]
FINAL = {"FINISHED", "PARTIAL_SUCCESS", "FAILED", "INVALID", "NOT_SUPPORTED"}


def errors(status, type_, message):
    return Answer(status, {"errors": [{"type": type_, "message": message}]})


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


class Vendor(Base):
    CONFIG = {"token": "sgp_delq", "workspace_id": "ws_delq"}
    JOB_STATES = ["RUNNING", "FINISHED"]

    def all_job_states(self):
        return STATES

    def fault(self, req, status):
        kind = {401: "unauthorized", 404: "not-found", 422: "validation",
                429: "too-many-requests"}.get(status, "server-error")
        return errors(status, kind, "fault injected by the test")

    def handle(self, req):
        if bearer(req) != self.config["token"]:
            return errors(401, "unauthorized", "Unauthorized")
        if req.method == "POST" and req.path == "/regulations":
            return self.create(req.json())
        m = re.fullmatch(r"/regulations/([^/]+)", req.path)
        if m and req.method == "GET":
            job = self.jobs.get(m.group(1))
            if job is None:
                return errors(404, "not-found", "Resource not found")
            s = self.job_step(job)
            reg = {"id": job["id"], "workspaceId": self.config["workspace_id"],
                   "overallStatus": s, "createdAt": iso(job["created"]), "streamStatus": []}
            if s in FINAL:
                reg["finishedAt"] = iso(time.time())
            return Answer(200, {"data": {"regulation": reg}})
        return errors(404, "not-found", "Resource not found")

    def create(self, body):
        if not isinstance(body, dict):
            return errors(422, "validation", "Validation failure: body must be an object")
        if body.get("regulationType") not in TYPES:
            return errors(422, "validation", "Validation failure: regulationType")
        if body.get("subjectType") not in SUBJECTS:
            return errors(422, "validation", "Validation failure: subjectType")
        ids = body.get("subjectIds")
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(i, str) and i for i in ids)):
            return errors(422, "validation", "Validation failure: subjectIds")
        job = self.new_job({"id": self.next_id("reg_"), "created": time.time(),
                            "regulationType": body["regulationType"],
                            "subjectType": body["subjectType"], "subjectIds": ids})
        return Answer(200, {"data": {"regulateId": job["id"]}})
