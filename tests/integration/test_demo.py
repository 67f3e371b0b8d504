"""``sealkeep demo``, the main job, end to end: real SoftHSM2 tokens and emulated drives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT = 300


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealkeep", "demo", *args],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


def test_demo_restores_every_key_twice_and_proves_it_is_the_original(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    done = run_demo("--dir", str(work), "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["error"] is None
    assert len(bytes.fromhex(report["set_id"])) == 16
    keys = {k["label"]: k for k in report["keys"]}
    # the key that may not leave the HSM is listed, not backed up, and says why
    assert keys["aes-local"]["backed_up"] is False
    assert "not extractable" in keys["aes-local"]["reason"]
    for label in ("aes-data", "rsa-sign", "ec-sign"):
        key = keys[label]
        assert key["backed_up"] is True
        assert key["quick_restore"] == "proven", key
        assert key["disaster_recovery"] == "proven", key
        assert key["same_key"] == {"quick": True, "recovery": True}, key
    titles = [s["title"] for s in report["steps"]]
    assert titles.index("create the domain") < titles.index("back up")
    assert titles.index("quick restore") < titles.index("recover the domain")
    quick = next(s for s in report["steps"] if s["title"] == "quick restore")
    assert quick["command"].count("/dev/pts/") == 1  # one drive, the other four unplugged
    recover = next(s for s in report["steps"] if s["title"] == "recover the domain")
    assert recover["command"].count("/dev/pts/") == 3
    # the human report went to stderr, and every drive was stopped at the end
    assert "PASSED" in done.stderr
    drives = json.loads((work / "drives" / "drives.json").read_text())
    assert drives["drives"] and all(d["port"] is None for d in drives["drives"])
    assert (work / "passphrases.txt").stat().st_mode & 0o077 == 0


def test_demo_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("mine")
    done = run_demo("--dir", str(tmp_path))
    assert done.returncode == 2
    assert "is not empty" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "something").read_text() == "mine"


def test_demo_without_an_hsm_module_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "SEALKEEP_PKCS11_MODULE": str(tmp_path / "missing.so")}
    done = run_demo("--dir", str(tmp_path / "work"), env=env)
    assert done.returncode != 0
    assert "missing.so does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_can_leave_the_portal_running_on_its_hsm_and_drives(tmp_path: Path) -> None:
    import re
    import signal
    import ssl

    import httpx

    work = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "sealkeep", "demo", "--dir", str(work), "--serve", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its group holds the portal and the drives it starts
    )
    try:
        assert demo.stdout is not None
        url = None
        for line in iter(demo.stdout.readline, ""):
            found = re.match(r"sealkeep serve: (https://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else url
            if line.startswith("log in as admin"):
                break
        assert url is not None and "PASSED" not in line
        password = (work / "portal-password.txt").read_text().strip()
        context = ssl.create_default_context(cafile=str(work / "service" / "tls-cert.pem"))
        with httpx.Client(base_url=url, verify=context, timeout=30) as client:
            login = client.post("/api/v1/login", json={"user": "admin", "password": password})
            assert login.status_code == 200
            slots = {s["label"]: s for s in client.get("/api/v1/slots").json()}
            assert slots["operator-hsm"]["domain_id"] and slots["new-hsm"]["domain_id"]
            drives = client.get("/api/v1/drives").json()
            assert len(drives) == 5 and all(d["reachable"] for d in drives), drives
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
        assert demo.returncode == 0, rest
        assert "Traceback" not in rest and "stopping the portal" in rest
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            try:
                demo.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    drives = json.loads((work / "drives" / "drives.json").read_text())
    assert all(d["port"] is None for d in drives["drives"])
