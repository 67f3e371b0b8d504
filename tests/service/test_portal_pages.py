"""Every portal page renders for a user who may see it, with a CSRF field in each form, and
refuses one who may not; pages never carry a password back."""

from __future__ import annotations

import re

import pytest
from service_support import ADMIN, ADMIN_PASSWORD, USER_PIN, Domain, Service

pytestmark = pytest.mark.integration

PAGES = ["/", "/backup", "/restore", "/jobs", "/audit", "/users", "/allowlist"]


def portal_login(service: Service, user: str = ADMIN, password: str = ADMIN_PASSWORD):
    client = service.client(follow_redirects=False)
    reply = client.post("/login", data={"user": user, "password": password})
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    return client


def test_every_page_renders_and_every_form_carries_its_csrf_token(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives)
    admin = portal_login(service)
    for path in PAGES:
        page = admin.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        forms = page.text.count("<form")
        assert page.text.count('name="csrf"') == forms, path
        assert "Traceback" not in page.text
    dashboard = admin.get("/").text
    assert "source" in dashboard and domain.emulator.drives[0].serial in dashboard
    backup = admin.get("/backup").text
    assert re.search(r'<option value="\d+"', backup)

    # a preview, then its start, as the Backup module's two forms send them
    csrf = re.search(r'name="csrf" value="([^"]+)"', backup).group(1)
    preview = admin.post(
        "/backup/preview",
        data={"csrf": csrf, "slot": "source", "so_id": "so-9", "password": USER_PIN, "label": "p"},
    )
    assert preview.status_code == 200, preview.text[:800]
    assert "aes-local" in preview.text and "not extractable" in preview.text
    assert USER_PIN not in preview.text
    draft = re.search(r'name="draft" value="([^"]+)"', preview.text).group(1)
    started = admin.post("/backup/start", data={"csrf": csrf, "draft": draft})
    assert started.status_code == 303 and started.headers["location"].startswith("/jobs/")
    job_page = admin.get(started.headers["location"])
    assert job_page.status_code == 200 and "Backup" in job_page.text
    # a draft is used once
    again = admin.post("/backup/start", data={"csrf": csrf, "draft": draft})
    assert again.status_code == 404 and "expired" in again.text


def test_a_wrong_so_password_stays_on_the_form_with_the_reason(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives)
    admin = portal_login(service)
    csrf = re.search(r'name="csrf" value="([^"]+)"', admin.get("/backup").text).group(1)
    refused = admin.post(
        "/backup/preview",
        data={"csrf": csrf, "slot": "source", "so_id": "so-9", "password": "nope-0000"},
    )
    assert refused.status_code == 400 and "refused the SO password" in refused.text
    assert "nope-0000" not in refused.text and 'value="so-9"' in refused.text


def test_a_page_without_the_role_is_refused_and_without_a_session_goes_to_login(
    serve,
) -> None:
    service: Service = serve()
    admin = service.login()
    admin.post("/api/v1/users", json={"user": "ada", "password": "p" * 12, "roles": ["auditor"]})
    auditor = portal_login(service, "ada", "p" * 12)
    for path in ("/backup", "/restore", "/users", "/allowlist"):
        page = auditor.get(path)
        assert page.status_code == 403 and "needs the" in page.text, path
        # shown inside the portal's frame, with what this user may open
        assert 'href="/audit"' in page.text and 'href="/backup"' not in page.text, path
    assert auditor.get("/audit").status_code == 200
    nav = auditor.get("/").text
    assert 'href="/backup"' not in nav and 'href="/audit"' in nav
    anonymous = service.client(follow_redirects=False)
    gone = anonymous.get("/")
    assert gone.status_code == 303 and gone.headers["location"] == "/login"
    # a form posted without the page's token changes nothing
    csrf_less = auditor.post("/logout")
    assert csrf_less.status_code == 403
    assert auditor.get("/audit").status_code == 200
