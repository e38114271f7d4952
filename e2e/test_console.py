"""The console (issue 26) in a real browser: headless Chromium, driven by playwright-core
(`e2e/console/drive.mjs`), against the whole system: the page and the API from the edge
under `wrangler dev`, a worker, Redis, the AWS emulator and the gateway stub. Each
scenario signs in as a fresh account and does what an operator does (send a campaign
and watch it finish, cancel one mid-way, retry a refused message, pause and resume, a
wrong token, a bad field) and checks what the page says against what the gateway got;
axe-core checks the views. Screenshots: target/e2e-logs/console/."""

import gzip
import json
import os
import shutil
import subprocess
import uuid

import pytest
import requests

from harness import BASE, LOGS, System, figure, token
from devstack import stack

SHOTS = LOGS / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def system():
    s = System()
    s.workers = s.start_workers("console")
    yield s
    for w in s.workers:
        w.stop()
    s.stop()


def test_the_console_is_served_beside_the_api_under_a_strict_policy(system):
    url = system.edge().url + BASE + "/console/"
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text[:200]
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    bare = requests.get(url.rstrip("/"), allow_redirects=False, timeout=10)
    assert bare.status_code == 308 and bare.headers["location"] == "console/"
    script = requests.get(url + "app.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript") and "fetch(" in script.text
    style = requests.get(url + "app.css", timeout=10)
    assert style.headers["content-type"].startswith("text/css")
    files = (page.content, script.content, style.content)
    gzipped = sum(len(gzip.compress(f, 9)) for f in files)
    figure("console_bundle", bytes=sum(len(f) for f in files), gzip_bytes=gzipped)
    assert gzipped <= 100_000, f"the console is {gzipped} bytes gzipped, over the 100 KB it may weigh"


@pytest.mark.parametrize("scenario", ["campaign", "cancel", "retry", "pause", "tokens", "accessibility"])
def test_an_operator_in_a_real_browser(system, scenario):
    account = f"console-{scenario}-{uuid.uuid4().hex[:6]}"
    if scenario == "cancel":
        # 1 a second: still sending when the page sees a few sent and Cancel lands.
        system.redis_count("HSET", "console:limits", account, "10 10000 1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CONSOLE": system.edge().url + BASE + "/console/",
        "GATEWAY": system.gw,
        "ACCOUNT": account,
        "TOKEN": token(account, exp_in=900),
        "EXPIRED": token(account, exp_in=-120),
        "SHOTS": str(SHOTS),
        "CHROMIUM": CHROMIUM,
    }
    run = subprocess.run(["node", str(stack.ROOT / "e2e" / "console" / "drive.mjs"), scenario], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"{scenario}:\n{run.stdout}\n{run.stderr}"
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            figure(f"console_{scenario}", **json.loads(line))
