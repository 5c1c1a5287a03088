"""Twilio SendGrid Marketing Campaigns double: find contacts by e-mail, delete
them (an asynchronous job), then the job's status.

Follows the SendGrid v3 API reference:
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/authentication
      Authorization: Bearer <API key>
  https://www.twilio.com/docs/sendgrid/api-reference/contacts/get-contacts-by-emails
      POST /v3/marketing/contacts/search/emails {emails: [...]} -> 200
      {result: {<email>: {contact: {...}}}} when any match (case-insensitive, also
      alternate_emails; an address that matches nothing gets {error: ...}); 404
      when none match; 400 when an address is invalid
  https://www.twilio.com/docs/sendgrid/api-reference/contacts/delete-contacts
      DELETE /v3/marketing/contacts?ids=<comma-separated ids> -> 202 {job_id};
      "Deletion jobs are processed asynchronously"
  https://www.twilio.com/docs/sendgrid/api-reference/contacts/import-contacts-status
      GET /v3/marketing/contacts/imports/{id} (also for delete jobs) ->
      {id, status: pending|completed|errored|failed, job_type, results, started_at,
      finished_at}
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits
      429 with X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset (epoch)
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/responses
      errors: {errors: [{field, message}]}
The contacts go when their delete job reports completed.
"""

import re
import time

from vendors.base import Answer, Base, bearer

STATES = ["pending", "completed", "errored", "failed"]


def errors(status, message, field=None):
    return Answer(status, {"errors": [{"field": field, "message": message}]})


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Vendor(Base):
    CONFIG = {"api_key": "SG.delq"}
    JOB_STATES = ["pending", "completed"]

    def all_job_states(self):
        return STATES

    def new_record(self, r):
        r.setdefault("id", "%08x-0000-4000-8000-%012x" % (next(self.ids), 0))
        r["email"] = r["email"].lower()
        r["alternate_emails"] = [e.lower() for e in r.get("alternate_emails", [])]
        return r

    def fault(self, req, status):
        ans = errors(status, "too many requests" if status == 429 else "fault injected by the test")
        if status == 429:
            ans.headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                           "X-RateLimit-Reset": str(int(time.time()) + 1)}
        return ans

    def handle(self, req):
        if bearer(req) != self.config["api_key"]:
            return errors(401, "authorization required")
        if req.method == "POST" and req.path == "/v3/marketing/contacts/search/emails":
            body = req.json()
            emails = body.get("emails") if isinstance(body, dict) else None
            if not isinstance(emails, list) or not emails or len(emails) > 100:
                return errors(400, "emails must be a list of 1 to 100 addresses", "emails")
            if any(not isinstance(e, str) or (e and "@" not in e) for e in emails):
                return errors(400, "invalid email address", "emails")
            result, found = {}, False
            for e in (e for e in emails if e):
                hit = [c for c in self.records
                       if e.lower() in [c["email"]] + c.get("alternate_emails", [])]
                if hit:
                    result[e] = {"contact": hit[0]}
                    found = True
                else:
                    result[e] = {"error": "contact not found"}
            return Answer(200, {"result": result}) if found else errors(404, "No contacts found")
        if req.method == "DELETE" and req.path == "/v3/marketing/contacts":
            ids = [i for i in (req.arg("ids") or "").split(",") if i]
            if not ids and req.arg("delete_all_contacts") != "true":
                return errors(400, "must provide ids or delete_all_contacts", "ids")
            job = self.new_job({"id": "%08x-job0-4000-8000-000000000000" % next(self.ids),
                                "job_type": "delete", "ids": ids, "started": time.time()})
            return Answer(202, {"job_id": job["id"]})
        m = re.fullmatch(r"/v3/marketing/contacts/imports/([^/]+)", req.path)
        if m and req.method == "GET":
            job = self.jobs.get(m.group(1))
            if job is None:
                return errors(404, "job not found", "id")
            s = self.job_step(job)
            deleted = 0
            if s == "completed":
                before = len(self.records)
                self.records = [c for c in self.records if c["id"] not in job["ids"]]
                deleted = before - len(self.records)
            ans = {"id": job["id"], "status": s, "job_type": "delete",
                   "results": {"requested_count": len(job["ids"]), "deleted_count": deleted,
                               "errored_count": len(job["ids"]) if s == "failed" else 0},
                   "started_at": iso(job["started"])}
            if s != "pending":
                ans["finished_at"] = iso(time.time())
            return Answer(200, ans)
        return errors(404, "resource not found")
