"""HubSpot double: GDPR delete of a contact by e-mail.

Follows HubSpot's developer documentation:
  https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/basic/post-crm-v3-objects-contacts-gdpr-delete
      POST /crm/v3/objects/contacts/gdpr-delete {objectId, idProperty} -> 204, no body;
      idProperty "email" identifies the contact by e-mail; "If email address is
      not found, the email address will be added to a blocklist" (still 204);
      without idProperty, objectId is the contact id (unknown -> 404)
  https://developers.hubspot.com/docs/guides/apps/authentication/intro-to-auth
      private app access token: Authorization: Bearer <token>
  https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details
      429 {status: error, message, errorType: RATE_LIMIT, correlationId, policyName}
  https://developers.hubspot.com/docs/api-reference/error-handling
      {status: error, message, correlationId, category}; 401 INVALID_AUTHENTICATION,
      400 VALIDATION_ERROR, 404 OBJECT_NOT_FOUND, 5xx
HubSpot stores e-mail addresses lower-cased.
"""

import uuid

from vendors.base import Answer, Base, bearer


def error(status, category, message, **extra):
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category}
    body.update(extra)
    return Answer(status, body)


class Vendor(Base):
    CONFIG = {"token": "pat-eu1-delq"}

    def __init__(self):
        super().__init__()
        self.blocklist = []

    def new_record(self, r):
        r.setdefault("id", str(next(self.ids) + 1000))
        r["email"] = r["email"].lower()
        return r

    def state(self):
        return {"records": self.records, "blocklist": self.blocklist}

    def fault(self, req, status):
        if status == 429:
            ans = error(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.",
                        errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING")
            del ans.body["category"]
            return ans
        if status == 401:
            return error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        return error(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR",
                     "fault injected by the test")

    def handle(self, req):
        if bearer(req) != self.config["token"]:
            return error(401, "INVALID_AUTHENTICATION",
                         "Authentication credentials not found. This API supports OAuth 2.0 "
                         "authentication and you can find more details at "
                         "https://developers.hubspot.com/docs/methods/auth/oauth-overview")
        if req.method == "POST" and req.path == "/crm/v3/objects/contacts/gdpr-delete":
            body = req.json()
            if not isinstance(body, dict) or not isinstance(body.get("objectId"), str) \
                    or not body["objectId"]:
                return error(400, "VALIDATION_ERROR", "Invalid input JSON: objectId is required")
            if body.get("idProperty") == "email":
                email = body["objectId"].lower()
                found = [r for r in self.records if r["email"] == email]
                if not found:
                    self.blocklist.append(email)
            elif body.get("idProperty") in (None, "hs_object_id"):
                found = [r for r in self.records if r["id"] == body["objectId"]]
                if not found:
                    return error(404, "OBJECT_NOT_FOUND", "resource not found")
            else:
                return error(400, "VALIDATION_ERROR",
                             "Property %s is not a unique identifier" % body["idProperty"])
            for r in found:
                self.records.remove(r)
            return Answer(204)
        return error(404, "OBJECT_NOT_FOUND", "resource not found")
