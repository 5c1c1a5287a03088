"""Zendesk Support double: find users by e-mail, delete (soft), then delete
permanently.

Follows Zendesk's API reference:
  https://developer.zendesk.com/api-reference/introduction/security-and-auth/
      API token: Basic base64("{email_address}/token:{api_token}"); or OAuth Bearer
  https://developer.zendesk.com/api-reference/ticketing/users/users/#search-users
      GET /api/v2/users/search?query=... (e.g. query=email:jane@example.com) ->
      {users: [...], next_page, previous_page, count}
  https://developer.zendesk.com/api-reference/introduction/pagination/
      offset pagination: page, per_page (max 100); next_page is the absolute URL of
      the next page, null on the last
  https://developer.zendesk.com/api-reference/ticketing/users/users/#delete-user
      DELETE /api/v2/users/{user_id} -> 200 {user: {..., active: false}} (soft delete)
  https://developer.zendesk.com/api-reference/ticketing/users/users/#permanently-delete-user
      DELETE /api/v2/deleted_users/{deleted_user_id} -> 200 {deleted_user: {...}};
      the user must be soft-deleted first
  https://developer.zendesk.com/api-reference/introduction/rate-limits/
      429 with a Retry-After header (seconds)
  https://developer.zendesk.com/api-reference/ticketing/introduction/#response-format
      errors: {error, description}; 401 "Couldn't authenticate you", 404 RecordNotFound
Paths are accepted with or without the ".json" suffix, as Zendesk does.
"""

import re
from urllib.parse import urlencode

from vendors.base import Answer, Base, basic, bearer


def error(status, err, description=None):
    body = {"error": err}
    if description:
        body["description"] = description
    return Answer(status, body)


class Vendor(Base):
    CONFIG = {"email": "agent@example.com", "api_token": "zd-token-delq"}

    def new_record(self, r):
        r.setdefault("id", 360000 + next(self.ids))
        r["active"] = True
        r["deleted"] = None         # None, "soft" or "permanent"
        return r

    def fault(self, req, status):
        if status == 429:
            return Answer(429, {"error": "APIRateLimitExceeded",
                                "description": "Number of allowed API requests per minute exceeded"},
                          headers={"Retry-After": "1"})
        if status == 401:
            return error(401, "Couldn't authenticate you")
        return error(status, "InternalError" if status >= 500 else "InvalidEndpoint",
                     "fault injected by the test")

    def authorised(self, req):
        creds = basic(req)
        if creds:
            return creds == ("%s/token" % self.config["email"], self.config["api_token"])
        return bearer(req) is not None and bearer(req) == self.config["api_token"]

    def handle(self, req):
        if not self.authorised(req):
            return error(401, "Couldn't authenticate you")
        path = re.sub(r"\.json$", "", req.path)
        if req.method == "GET" and path == "/api/v2/users/search":
            return self.search(req)
        m = re.fullmatch(r"/api/v2/(users|deleted_users)/(\d+)", path)
        if m and req.method == "DELETE":
            uid = int(m.group(2))
            for u in self.records:
                if u["id"] != uid:
                    continue
                if m.group(1) == "users" and u["deleted"] is None:
                    u["deleted"], u["active"] = "soft", False
                    return Answer(200, {"user": self.public(u)})
                if m.group(1) == "deleted_users" and u["deleted"] == "soft":
                    u["deleted"] = "permanent"
                    for k in ("email", "name", "phone"):
                        u.pop(k, None)
                    return Answer(200, {"deleted_user": self.public(u)})
            return error(404, "RecordNotFound", "Not found")
        return error(404, "InvalidEndpoint", "Not found")

    def public(self, u):
        return {k: v for k, v in u.items() if k != "deleted"}

    def search(self, req):
        query = req.arg("query")
        if not query:
            return error(400, "InvalidQuery", "Query parameter required")
        term = query[len("email:"):] if query.startswith("email:") else query
        term = term.strip('"').lower()
        hits = [self.public(u) for u in self.records
                if u["deleted"] is None and (u.get("email") or "").lower() == term]
        try:
            page = int(req.arg("page", "1"))
            per_page = min(int(req.arg("per_page", "100")), 100, self.page_size or 100)
        except ValueError:
            return error(400, "InvalidPagination", "page and per_page must be integers")
        start = (page - 1) * per_page
        more = start + per_page < len(hits)
        link = lambda p: "%s/api/v2/users/search.json?%s" % (
            req.base, urlencode({"query": query, "page": p, "per_page": per_page}))
        return Answer(200, {"users": hits[start:start + per_page],
                            "next_page": link(page + 1) if more else None,
                            "previous_page": link(page - 1) if page > 1 else None,
                            "count": len(hits)})
