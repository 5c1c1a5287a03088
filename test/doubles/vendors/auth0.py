"""Auth0 double: a Management API token by client credentials, users by e-mail,
delete each.

Follows Auth0's documentation:
  https://auth0.com/docs/secure/tokens/access-tokens/management-api-access-tokens/get-management-api-access-tokens-for-production
      POST /oauth/token {grant_type: client_credentials, client_id, client_secret,
      audience: https://TENANT/api/v2/} -> {access_token, token_type: Bearer,
      expires_in, scope}; a bad client -> 401 {error: access_denied, error_description}
  https://auth0.com/docs/api/authentication#client-credentials-flow (JSON or form body)
  https://auth0.com/docs/api/management/v2/users-by-email/get-users-by-email
      GET /api/v2/users-by-email?email= -> array of users (exact match; Auth0
      stores e-mails lower-cased)
  https://auth0.com/docs/api/management/v2/users/delete-users-by-id
      DELETE /api/v2/users/{id} (id URL-encoded, e.g. auth0%7C123) -> 204
  https://auth0.com/docs/troubleshoot/customer-support/operational-policies/rate-limit-policy/management-api-endpoint-rate-limits
      429 with x-ratelimit-limit / -remaining / -reset (epoch seconds)
  Management API errors: {statusCode, error, message[, errorCode]}; an expired or
  unknown token -> 401.
"""

import re
import time
from urllib.parse import unquote

from vendors.base import Answer, Base, bearer


def mgmt_error(status, error, message, code=None):
    body = {"statusCode": status, "error": error, "message": message}
    if code:
        body["errorCode"] = code
    return Answer(status, body)


class Vendor(Base):
    CONFIG = {"client_id": "delq-client", "client_secret": "delq-secret",
              "audience": None, "expires_in": 86400}

    def __init__(self):
        super().__init__()
        self.tokens = {}            # token -> expiry (epoch seconds)
        self.issued = 0

    def new_record(self, r):
        r.setdefault("user_id", self.next_id("auth0|"))
        r.setdefault("identities", [{"provider": "auth0", "user_id": r["user_id"][6:],
                                     "connection": "Username-Password-Authentication"}])
        return r

    def control(self, item):
        item = dict(item)
        if item.pop("revoke_tokens", False):
            self.tokens.clear()
        super().control(item)

    def state(self):
        return {"records": self.records, "tokens_issued": self.issued,
                "tokens_valid": len(self.tokens)}

    def fault(self, req, status):
        if req.path == "/oauth/token":
            return Answer(status, {"error": "access_denied" if status < 500 else "server_error",
                                   "error_description": "fault injected by the test"})
        if status == 429:
            ans = mgmt_error(429, "Too Many Requests", "Global limit has been reached",
                             "too_many_requests")
            ans.headers = {"x-ratelimit-limit": "50", "x-ratelimit-remaining": "0",
                           "x-ratelimit-reset": str(int(time.time()) + 1)}
            return ans
        if status == 401:
            return mgmt_error(401, "Unauthorized", "Invalid token")
        if status >= 500:
            return mgmt_error(status, "Internal Server Error", "Internal error")
        return mgmt_error(status, "Bad Request", "Bad request")

    def handle(self, req):
        if req.path == "/oauth/token" and req.method == "POST":
            return self.token(req)
        tok = bearer(req)
        if tok is None:
            return mgmt_error(401, "Unauthorized", "Missing authentication")
        if tok not in self.tokens:
            return mgmt_error(401, "Unauthorized", "Invalid token")
        if self.tokens[tok] <= time.time():
            return mgmt_error(401, "Unauthorized",
                              "Expired token received for JSON Web Token validation")
        if req.method == "GET" and req.path == "/api/v2/users-by-email":
            email = req.arg("email")
            if not email:
                return mgmt_error(400, "Bad Request",
                                  "Query validation error: 'Missing required property: email'",
                                  "invalid_query_string")
            return Answer(200, [u for u in self.records if u.get("email") == email])
        m = re.fullmatch(r"/api/v2/users/([^/]+)", req.path)
        if m and req.method == "DELETE":
            uid = unquote(m.group(1))
            self.records = [u for u in self.records if u["user_id"] != uid]
            return Answer(204)
        return mgmt_error(404, "Not Found", "Not Found")

    def token(self, req):
        ctype = req.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            p = req.json() or {}
        else:
            p = {k: v[0] for k, v in req.form().items()}
        if p.get("grant_type") != "client_credentials":
            return Answer(400, {"error": "unsupported_grant_type",
                                "error_description": "Unsupported grant type: %s" % p.get("grant_type")})
        if (p.get("client_id") != self.config["client_id"]
                or p.get("client_secret") != self.config["client_secret"]):
            return Answer(401, {"error": "access_denied", "error_description": "Unauthorized"})
        audience = self.config["audience"] or req.base + "/api/v2/"
        if p.get("audience") != audience:
            return Answer(403, {"error": "access_denied",
                                "error_description": "Service not enabled within domain: %s"
                                % p.get("audience")})
        self.issued += 1
        tok = "mgmt-token-%d" % self.issued
        self.tokens[tok] = time.time() + self.config["expires_in"]
        return Answer(200, {"access_token": tok, "token_type": "Bearer",
                            "expires_in": self.config["expires_in"],
                            "scope": "read:users delete:users"})
