"""The IP allowlist: an address outside it is refused everything, and the refusal audited."""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from service_support import ADMIN, ADMIN_PASSWORD, Service

pytestmark = pytest.mark.integration


def from_address(service: Service, address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (any 127.x is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    client = httpx.Client(base_url=service.url, transport=transport, timeout=30)
    service.clients.append(client)
    return client


def test_a_client_outside_the_allowlist_is_refused_and_audited(serve) -> None:
    service: Service = serve()
    admin = service.login()
    saved = admin.put("/api/v1/allowlist", json={"cidrs": ["127.0.0.1/32"]})
    assert saved.status_code == 200, saved.text
    assert saved.json()["cidrs"] == ["127.0.0.1/32"]

    outsider = from_address(service, "127.0.0.2")
    login = outsider.post("/api/v1/login", json={"user": ADMIN, "password": ADMIN_PASSWORD})
    assert login.status_code == 403
    assert login.json()["error"] == "AddressRefused"
    assert "127.0.0.2" in login.json()["message"] and "set-cookie" not in login.headers
    page = outsider.get("/login", headers={"Accept": "text/html"})
    assert page.status_code == 403 and "Not allowed from this address" in page.text
    # the OpenAPI document too: nothing at all answers an outsider
    assert outsider.get("/api/v1/openapi.json").status_code == 403

    insider = from_address(service, "127.0.0.1")
    assert (
        insider.post("/api/v1/login", json={"user": ADMIN, "password": ADMIN_PASSWORD}).status_code
        == 200
    )

    conn = sqlite3.connect(service.state / "sealkeep.db")
    refused = conn.execute(
        "SELECT address, target, result FROM audit WHERE action = 'request.refused'"
    ).fetchall()
    conn.close()
    assert ("127.0.0.2", "POST /api/v1/login", "refused") in refused
    assert ("127.0.0.2", "GET /login", "refused") in refused


def test_an_admin_cannot_lock_themselves_out_without_confirming(serve) -> None:
    service: Service = serve()
    admin = service.login()
    elsewhere = admin.put("/api/v1/allowlist", json={"cidrs": ["10.0.0.0/8"]})
    assert elsewhere.status_code == 409
    assert "your own address 127.0.0.1" in elsewhere.json()["message"]
    assert admin.get("/api/v1/allowlist").json()["cidrs"] == ["127.0.0.0/8", "::1/128"]
    malformed = admin.put("/api/v1/allowlist", json={"cidrs": ["10.0.0.300/8"]})
    assert malformed.status_code == 400 and "CIDR" in malformed.json()["message"]
    empty = admin.put("/api/v1/allowlist", json={"cidrs": []})
    assert empty.status_code == 400
    confirmed = admin.put(
        "/api/v1/allowlist", json={"cidrs": ["10.0.0.0/8"], "confirm_lockout": True}
    )
    assert confirmed.status_code == 200
    # and now even the admin's own next request is refused
    assert admin.get("/api/v1/allowlist").status_code == 403


def test_a_forwarded_header_counts_only_from_a_configured_proxy(serve) -> None:
    service: Service = serve(env={"SEALKEEP_TRUSTED_PROXIES": '["127.0.0.3"]'})
    admin = service.login()
    admin.put("/api/v1/allowlist", json={"cidrs": ["127.0.0.1/32", "127.0.0.3/32"]})
    # a client inside the list cannot claim to be elsewhere, nor one outside to be inside
    spoof = from_address(service, "127.0.0.2")
    claimed = spoof.get("/api/v1/openapi.json", headers={"X-Forwarded-For": "127.0.0.1"})
    assert claimed.status_code == 403
    proxy = from_address(service, "127.0.0.3")
    through = proxy.get("/api/v1/openapi.json", headers={"X-Forwarded-For": "127.0.0.9"})
    assert through.status_code == 403 and "127.0.0.9" in through.json()["message"]
    direct = proxy.get("/api/v1/openapi.json")
    assert direct.status_code == 200


def test_a_request_naming_another_host_is_refused(serve) -> None:
    """A page of another site whose name was rebound to 127.0.0.1 (DNS rebinding) reaches
    the port, but names its own host: refused before anything runs."""
    service: Service = serve()
    client = service.client()
    rebound = client.post(
        "/api/v1/login",
        json={"user": ADMIN, "password": ADMIN_PASSWORD},
        headers={"Host": "attacker.example"},
    )
    assert rebound.status_code == 400 and "set-cookie" not in rebound.headers
    for name in ("127.0.0.1", "localhost"):
        port = service.url.rsplit(":", 1)[1].rstrip("/")
        named = client.get("/api/v1/openapi.json", headers={"Host": f"{name}:{port}"})
        assert named.status_code == 200, name
