"""Jobs: live progress over Server-Sent Events, and a job cut by a stopped service."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from service_support import USER_PIN, Domain, Service, start_service, stop_service

pytestmark = pytest.mark.integration


def read_events(client: Any, job: str) -> list[dict[str, Any]]:
    events = []
    with client.stream("GET", f"/api/v1/jobs/{job}/events") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "state":
                events.append(json.loads(line.removeprefix("data: ")))
            elif line.startswith("data: ") and kind == "end":
                break
    return events


def test_backup_progress_streams_until_the_job_is_done(serve, domain: Domain) -> None:
    service: Service = serve("--drives", domain.drives)
    operator = service.add_user("olivia", "operator")
    job = operator.post(
        "/api/v1/backups", json={"slot": "source", "so_id": "so-1", "password": USER_PIN}
    ).json()["job"]
    events = read_events(operator, job)
    assert events[0]["state"] in ("queued", "running")
    assert events[-1]["state"] == "done" and events[-1]["result"]["set_id"]
    phases = [e["progress"].get("phase") for e in events]
    assert "done" in phases
    drives = events[-1]["progress"]["drives"]
    assert len(drives) == 3
    assert all(d["done"] == d["total"] > 0 for d in drives.values())
    # a finished job's stream answers its final state at once
    again = read_events(operator, job)
    assert [e["state"] for e in again] == ["done"]
    assert operator.get("/api/v1/jobs/nope/events").status_code == 404


def test_a_job_cut_by_a_stopped_service_is_interrupted_not_running(
    serve, make_domain: Callable[..., Domain]
) -> None:
    slow = make_domain(link="uart:38400")  # about 4 KB/s: the write takes seconds
    service: Service = serve("--drives", slow.drives)
    operator = service.add_user("olivia", "operator")
    job = operator.post(
        "/api/v1/backups", json={"slot": "source", "so_id": "so-1", "password": USER_PIN}
    ).json()["job"]
    deadline = time.monotonic() + 60
    while operator.get(f"/api/v1/jobs/{job}").json()["progress"].get("phase") != (
        "writing to the drives"
    ):
        assert time.monotonic() < deadline, "the backup never started writing"
        time.sleep(0.05)
    service.process.send_signal(signal.SIGKILL)
    stop_service(service)
    again = start_service(service.state, service.env, "--drives", slow.drives)
    try:
        client = again.login("olivia", "correct horse battery staple")
        body = client.get(f"/api/v1/jobs/{job}").json()
        assert body["state"] == "interrupted", body
        assert "stopped while this job ran" in body["error"]["message"]
        assert client.get("/api/v1/sets").json() == []
    finally:
        stop_service(again)
