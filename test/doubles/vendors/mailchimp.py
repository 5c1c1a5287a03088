"""Mailchimp Marketing API double: permanent delete of a list member.

Follows the Mailchimp Marketing API reference:
  https://mailchimp.com/developer/marketing/docs/fundamentals/#api-structure
      base https://<dc>.api.mailchimp.com/3.0 (dc: the API key's suffix, e.g. us6)
  https://mailchimp.com/developer/marketing/docs/fundamentals/#authentication
      HTTP Basic: any user name, the API key as password (or an OAuth Bearer token)
  https://mailchimp.com/developer/marketing/docs/methods-parameters/#subscriber-hash
      subscriber_hash = MD5 hex of the lower-cased e-mail address
  https://mailchimp.com/developer/marketing/api/list-members/delete-list-member/
      POST /lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent -> 204;
      an unknown list or member -> 404
  https://mailchimp.com/developer/marketing/docs/errors/
      application/problem+json {type, title, status, detail, instance};
      401 "API Key Invalid", 404 "Resource Not Found", 429 "Too Many Requests"
      (at most 10 simultaneous connections), 500
"""

import hashlib
import re
import uuid

from vendors.base import Answer, Base, basic, bearer

TITLES = {400: "Invalid Resource", 401: "API Key Invalid", 403: "Forbidden",
          404: "Resource Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
          500: "Internal Server Error", 503: "Service Unavailable"}


def problem(status, detail):
    return Answer(status, {"type": "https://mailchimp.com/developer/marketing/docs/errors/",
                           "title": TITLES.get(status, "Error"), "status": status,
                           "detail": detail, "instance": str(uuid.uuid4())},
                  content_type="application/problem+json; charset=utf-8")


class Vendor(Base):
    CONFIG = {"api_key": "0123456789abcdef0123456789abcdef-us6", "lists": ["a1b2c3d4e5"]}

    def new_record(self, r):
        r["id"] = hashlib.md5(r["email_address"].lower().encode()).hexdigest()
        r.setdefault("status", "subscribed")
        return r

    def fault(self, req, status):
        return problem(status, "fault injected by the test")

    def handle(self, req):
        creds = basic(req)
        key = creds[1] if creds else bearer(req)
        if key != self.config["api_key"]:
            return problem(401, "Your API key may be invalid, or you've attempted to access "
                           "the wrong datacenter.")
        m = re.fullmatch(r"/3\.0/lists/([^/]+)/members/([^/]+)/actions/delete-permanent", req.path)
        if m and req.method == "POST":
            list_id, sub = m.groups()
            if list_id not in self.config["lists"]:
                return problem(404, "The requested resource could not be found.")
            for r in self.records:
                if r["list_id"] == list_id and r["id"] == sub:
                    self.records.remove(r)
                    return Answer(204)
            return problem(404, "The requested resource could not be found.")
        return problem(404, "The requested resource could not be found.")
