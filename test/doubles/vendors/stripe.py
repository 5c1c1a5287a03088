"""Stripe double: find customers by e-mail, delete each.

Follows Stripe's API reference:
  https://docs.stripe.com/api/authentication   (secret key as Bearer token, or as
                                                the Basic auth user name)
  https://docs.stripe.com/api/customers/list   (GET /v1/customers?email=: exact,
                                                case-sensitive; newest first)
  https://docs.stripe.com/api/pagination       (limit 1-100, default 10;
                                                starting_after=<last id>; has_more)
  https://docs.stripe.com/api/customers/delete (DELETE /v1/customers/{id} ->
                                                {"id","object":"customer","deleted":true};
                                                an unknown id is an error)
  https://docs.stripe.com/api/errors           ({"error":{"type","code","message","param"}};
                                                401 bad key, 404 resource_missing,
                                                429 rate_limit, 5xx api_error)
  https://docs.stripe.com/rate-limits          (429: back off and retry)
Deleted customers stay retrievable but leave list results.
"""

import re
from urllib.parse import unquote

from vendors.base import Answer, Base, basic, bearer


def error(status, type_, message, code=None, param=None):
    err = {"type": type_, "message": message}
    if code:
        err["code"] = code
        err["doc_url"] = "https://stripe.com/docs/error-codes/" + code.replace("_", "-")
    if param:
        err["param"] = param
    return Answer(status, {"error": err})


class Vendor(Base):
    CONFIG = {"api_key": "sk_test_delq"}

    def new_record(self, r):
        r.setdefault("id", self.next_id("cus_"))
        r.setdefault("object", "customer")
        r["deleted"] = False
        return r

    def fault(self, req, status):
        if status == 401:
            return self.bad_key()
        if status == 404:
            return error(404, "invalid_request_error", "No such customer", "resource_missing", "id")
        if status == 429:
            return error(429, "invalid_request_error",
                         "Request rate limit exceeded. Learn more about rate limits here "
                         "https://stripe.com/docs/rate-limits.", "rate_limit")
        if status >= 500:
            return error(status, "api_error", "An unknown error occurred")
        return error(status, "invalid_request_error", "Invalid request")

    def bad_key(self):
        return error(401, "invalid_request_error", "Invalid API Key provided: sk_****")

    def handle(self, req):
        key = bearer(req)
        if key is None and basic(req):
            key = basic(req)[0]
        if key is None:
            return error(401, "invalid_request_error",
                         "You did not provide an API key. You need to provide your API key "
                         "in the Authorization header, using Bearer auth.")
        if key != self.config["api_key"]:
            return self.bad_key()
        if req.method == "GET" and req.path == "/v1/customers":
            return self.list_customers(req)
        m = re.fullmatch(r"/v1/customers/([^/]+)", req.path)
        if m and req.method == "DELETE":
            return self.delete_customer(unquote(m.group(1)))
        return error(404, "invalid_request_error",
                     "Unrecognized request URL (%s: %s)." % (req.method, req.path))

    def list_customers(self, req):
        try:
            limit = int(req.arg("limit", "10"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            return error(400, "invalid_request_error",
                         "Invalid integer: limit must be between 1 and 100", "parameter_invalid_integer", "limit")
        if self.page_size:
            limit = min(limit, self.page_size)
        live = [c for c in reversed(self.records) if not c["deleted"]]
        email = req.arg("email")
        if email is not None:
            live = [c for c in live if c.get("email") == email]
        after = req.arg("starting_after")
        if after:
            ids = [c["id"] for c in live]
            if after not in ids:
                return error(400, "invalid_request_error", "No such customer: '%s'" % after,
                             "resource_missing", "starting_after")
            live = live[ids.index(after) + 1:]
        return Answer(200, {"object": "list", "url": "/v1/customers",
                            "has_more": len(live) > limit, "data": live[:limit]})

    def delete_customer(self, cid):
        for c in self.records:
            if c["id"] == cid and not c["deleted"]:
                c["deleted"] = True
                return Answer(200, {"id": cid, "object": "customer", "deleted": True})
        return error(404, "invalid_request_error", "No such customer: '%s'" % cid,
                     "resource_missing", "id")
