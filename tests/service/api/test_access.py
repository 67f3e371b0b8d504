"""Who may do what: every route needs a role, each role is refused what it does not hold,
CSRF, session expiry, login throttling and API tokens."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sealkeep.service.app import create_app
from sealkeep.service.settings import Settings
from service_support import ADMIN, ADMIN_PASSWORD, Service

pytestmark = pytest.mark.integration

OPEN_ROUTES = {
    ("POST", "/api/v1/login"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/static"),
}
"""Routes anyone inside the allowlist may call: logging in, and the API's own description."""


def role_checks(dependant: Any) -> set[frozenset[str]]:
    found = set()
    for dep in dependant.dependencies:
        roles = getattr(dep.call, "roles", None)
        if roles is not None:
            found.add(frozenset(r.value for r in roles))
        found |= role_checks(dep)
    return found


def every_route(app: Any) -> Iterator[tuple[str, str, Any]]:
    """(method, path, dependant) of every route, through included routers."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for item in contexts() if contexts is not None else [route]:
            path = getattr(item, "path", "")
            for method in (getattr(item, "methods", None) or {"GET"}) - {"HEAD"}:
                yield method, path, getattr(item, "dependant", None)


def test_every_route_but_login_needs_a_role(tmp_path) -> None:
    app = create_app(Settings(state=tmp_path))
    routes = list(every_route(app))
    assert ("POST", "/api/v1/backups") in {(m, p) for m, p, _ in routes}
    unguarded = [
        (method, path)
        for method, path, dependant in routes
        if (method, path) not in OPEN_ROUTES and (dependant is None or not role_checks(dependant))
    ]
    assert unguarded == []


# (method, path, body, roles that may) — every state-changing and reading route of the API.
BOUNDARIES: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
    ("GET", "/api/v1/users", None, {"admin"}),
    (
        "POST",
        "/api/v1/users",
        {"user": "x1", "password": "p" * 12, "roles": ["auditor"]},
        {"admin"},
    ),
    ("PUT", "/api/v1/users/x1/roles", {"roles": ["auditor"]}, {"admin"}),
    ("DELETE", "/api/v1/users/x1", None, {"admin"}),
    ("GET", "/api/v1/allowlist", None, {"admin"}),
    ("PUT", "/api/v1/allowlist", {"cidrs": ["127.0.0.0/8"]}, {"admin"}),
    ("GET", "/api/v1/audit", None, {"auditor"}),
    ("POST", "/api/v1/backups", {"slot": 0, "so_id": "s", "password": "x"}, {"operator"}),
    ("POST", "/api/v1/backups/preview", {"slot": 0, "so_id": "s", "password": "x"}, {"operator"}),
    (
        "POST",
        "/api/v1/restores",
        {"set_id": "abcd", "slot": 0, "so_id": "s", "password": "x"},
        {"operator"},
    ),
    ("GET", "/api/v1/slots", None, {"admin", "operator", "auditor"}),
    ("GET", "/api/v1/sets", None, {"admin", "operator", "auditor"}),
    ("GET", "/api/v1/jobs", None, {"admin", "operator", "auditor"}),
    ("GET", "/api/v1/drives", None, {"admin", "operator", "auditor"}),
]


def test_each_role_is_refused_what_it_does_not_hold_and_each_refusal_is_audited(serve) -> None:
    service: Service = serve()
    clients = {
        role: service.add_user(f"only-{role}", role) for role in ("admin", "operator", "auditor")
    }
    refusals = 0
    for method, path, body, allowed in BOUNDARIES:
        for role, client in clients.items():
            reply = client.request(method, path, json=body)
            refused = reply.status_code == 403 and reply.json()["error"] == "Forbidden"
            assert refused == (role not in allowed), (role, method, path, reply.text)
            if refused:
                refusals += 1
                assert "needs the" in reply.json()["message"]
    auditor = clients["auditor"]
    records = auditor.get("/api/v1/audit", params={"limit": 1000}).json()
    audited = [r for r in records if r["action"] == "request.refused"]
    assert len(audited) == refusals
    assert {r["actor"] for r in audited} == {"only-admin", "only-operator", "only-auditor"}


def test_no_session_no_answer_and_csrf_is_required_for_changes(serve) -> None:
    service: Service = serve()
    anonymous = service.client()
    for path in ("/api/v1/slots", "/api/v1/users", "/api/v1/audit", "/api/v1/jobs"):
        reply = anonymous.get(path)
        assert reply.status_code == 401 and reply.json()["error"] == "NotLoggedIn"

    admin = service.login()
    token = admin.headers.pop("X-CSRF-Token")
    body = {"user": "eve", "password": "p" * 12, "roles": ["admin"]}
    refused = admin.post("/api/v1/users", json=body)
    assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
    forged = admin.post("/api/v1/users", json=body, headers={"X-CSRF-Token": "guess"})
    assert forged.status_code == 403
    assert [u["user"] for u in admin.get("/api/v1/users").json()] == [ADMIN]
    made = admin.post("/api/v1/users", json=body, headers={"X-CSRF-Token": token})
    assert made.status_code == 201


def test_the_session_cookie_is_strict_and_http_only(serve) -> None:
    service: Service = serve()
    reply = service.client().post("/api/v1/login", json={"user": ADMIN, "password": ADMIN_PASSWORD})
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


def test_an_idle_session_expires(serve) -> None:
    service: Service = serve(env={"SEALKEEP_SESSION_IDLE_SECONDS": "1.5"})
    admin = service.login()
    assert admin.get("/api/v1/slots").status_code == 200
    time.sleep(2.0)
    expired = admin.get("/api/v1/slots")
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    # gone for good, not only for a moment
    assert admin.get("/api/v1/slots").status_code == 401


def test_logins_are_throttled_per_user_and_every_attempt_is_audited(serve) -> None:
    service: Service = serve(env={"SEALKEEP_LOGIN_FAILURES_PER_USER": "3"})
    client = service.client()
    for _ in range(3):
        wrong = client.post("/api/v1/login", json={"user": ADMIN, "password": "not it at all"})
        assert wrong.status_code == 401
        assert wrong.json()["message"] == "wrong user name or password"
    throttled = client.post("/api/v1/login", json={"user": ADMIN, "password": ADMIN_PASSWORD})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert "too many failed logins" in throttled.json()["message"]
    # an unknown user answers exactly as a wrong password does
    nobody = client.post("/api/v1/login", json={"user": "nobody", "password": "x" * 12})
    assert nobody.status_code == 401 and nobody.json()["message"] == "wrong user name or password"

    conn = sqlite3.connect(service.state / "sealkeep.db")
    rows = conn.execute("SELECT actor, result FROM audit WHERE action = 'login'").fetchall()
    conn.close()
    assert rows.count((ADMIN, "failed")) == 3 and (ADMIN, "throttled") in rows
    assert ("nobody", "failed") in rows


def test_an_api_token_carries_only_the_roles_it_was_given(serve) -> None:
    service: Service = serve()
    admin = service.login()
    made = admin.post("/api/v1/tokens", json={"name": "nightly", "roles": ["auditor"]})
    assert made.status_code == 200, made.text
    token = made.json()["token"]
    bot = service.client(headers={"Authorization": f"Bearer {token}"})
    assert bot.get("/api/v1/audit").status_code == 200
    refused = bot.get("/api/v1/users")
    assert refused.status_code == 403 and refused.json()["error"] == "Forbidden"
    # a token needs no CSRF token (no cookie rides along), and a wrong one is unknown
    assert (
        service.client(headers={"Authorization": "Bearer skt_guess"})
        .get("/api/v1/slots")
        .status_code
        == 401
    )
    # listed by name, never by value; revoked, it opens nothing
    assert admin.get("/api/v1/tokens").json() == [
        {
            "name": "nightly",
            "roles": ["auditor"],
            "created": admin.get("/api/v1/tokens").json()[0]["created"],
        }
    ]
    assert token not in admin.get("/api/v1/tokens").text
    assert (
        admin.post("/api/v1/tokens", json={"name": "nightly", "roles": ["auditor"]}).status_code
        == 409
    )
    assert admin.delete("/api/v1/tokens/nightly").status_code == 200
    assert bot.get("/api/v1/audit").status_code == 401
    # no token carries a role its user lacks
    auditor = service.add_user("ada", "auditor")
    grab = auditor.post("/api/v1/tokens", json={"name": "x", "roles": ["admin"]})
    assert grab.status_code == 400 and "admin" in grab.json()["message"]


def test_users_and_roles_are_kept_sane(serve) -> None:
    service: Service = serve()
    admin = service.login()
    short = admin.post(
        "/api/v1/users", json={"user": "bob", "password": "short", "roles": ["operator"]}
    )
    assert short.status_code == 400 and "12" in short.json()["message"]
    bad_role = admin.post(
        "/api/v1/users", json={"user": "bob", "password": "p" * 12, "roles": ["root"]}
    )
    assert bad_role.status_code == 400 and "no role 'root'" in bad_role.json()["message"]
    twice = {"user": "bob", "password": "p" * 12, "roles": ["operator", "auditor"]}
    assert admin.post("/api/v1/users", json=twice).status_code == 201
    again = admin.post("/api/v1/users", json=twice)
    assert again.status_code == 409 and "exists" in again.json()["message"]
    last = admin.put(f"/api/v1/users/{ADMIN}/roles", json={"roles": ["auditor"]})
    assert last.status_code == 409 and "last admin" in last.json()["message"]
    bob = service.login("bob", "p" * 12)
    assert bob.get("/api/v1/audit").status_code == 200
    assert admin.put("/api/v1/users/bob/roles", json={"roles": ["operator"]}).status_code == 200
    # a change of roles ends the user's sessions
    assert bob.get("/api/v1/audit").status_code == 401


def test_a_malformed_request_gets_a_clear_message(serve) -> None:
    service: Service = serve()
    admin = service.login()
    reply = admin.post("/api/v1/users", json={"user": "bob"})
    body = reply.json()
    assert reply.status_code == 400 and body["error"] == "BadInput"
    assert "password" in body["message"] and "roles" in body["message"]
    raw = admin.post(
        "/api/v1/users", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert raw.status_code == 400 and "Traceback" not in raw.text


def test_openapi_document_is_served(serve) -> None:
    service: Service = serve()
    doc = service.client().get("/api/v1/openapi.json").json()
    assert {"/api/v1/backups", "/api/v1/restores", "/api/v1/jobs/{job_id}"} <= set(doc["paths"])


_ = httpx
