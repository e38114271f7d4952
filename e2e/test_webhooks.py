"""Webhook endpoints through the edge under `wrangler dev` (issue 25: registration; the
worker's deliveries come next): an account registers, lists, rotates and deletes its
endpoints; a secret is shown once and never again, nor logged; a URL that would reach
inside our network is refused naming the field; each account sees only its own."""

import re
from datetime import datetime, timedelta, timezone

from harness import LOGS, account, token

SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")


def create(edge, creator, body):
    return edge.call("POST", "/webhooks", token(creator), json_body=body)


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_an_endpoint_is_registered_listed_rotated_and_deleted(edge):
    creator, other = account(), account()
    r = create(edge, creator, {"url": "https://crm.example.com/hooks/of", "events": ["message.sent", "message.failed"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert SECRET.match(made["secret"]) and made["id"].startswith("ep_"), made
    assert (made["url"], made["events"]) == ("https://crm.example.com/hooks/of", ["message.sent", "message.failed"])
    everything = create(edge, creator, {"url": "https://8.8.8.8/all"}).json()
    assert len(everything["events"]) == 7, "every event when none is named"

    listed = edge.call("GET", "/webhooks", token(creator)).json()["endpoints"]
    assert [e["id"] for e in listed] == [made["id"], everything["id"]], "oldest first"
    assert all("secret" not in e for e in listed), "a secret is shown once, when made"
    assert edge.call("GET", "/webhooks", token(other)).json() == {"endpoints": []}, "another account sees none"
    assert edge.call("POST", f"/webhooks/{made['id']}/rotate", token(other)).status_code == 404
    assert edge.call("DELETE", f"/webhooks/{made['id']}", token(other)).status_code == 404

    rotated = edge.call("POST", f"/webhooks/{made['id']}/rotate", token(creator))
    assert rotated.status_code == 200, rotated.text
    rotated = rotated.json()
    assert SECRET.match(rotated["secret"]) and rotated["secret"] != made["secret"]
    grace = parse_time(rotated["previousSecretExpiresAt"]) - datetime.now(timezone.utc)
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24), "the old secret signs beside the new one for a day"
    listed = {e["id"]: e for e in edge.call("GET", "/webhooks", token(creator)).json()["endpoints"]}
    assert listed[made["id"]]["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    assert "previousSecretExpiresAt" not in listed[everything["id"]]

    assert edge.call("DELETE", f"/webhooks/{made['id']}", token(creator)).status_code == 204
    assert edge.call("DELETE", f"/webhooks/{made['id']}", token(creator)).status_code == 404
    assert edge.call("POST", f"/webhooks/{made['id']}/rotate", token(creator)).status_code == 404
    assert [e["id"] for e in edge.call("GET", "/webhooks", token(creator)).json()["endpoints"]] == [everything["id"]]

    # No secret in the edge's log (the answers are the only place they are shown).
    log = (LOGS / "edge.log").read_text(errors="replace")
    assert not any(s in log for s in (made["secret"], rotated["secret"], everything["secret"]))


def test_an_endpoint_that_would_reach_inside_is_refused_naming_the_field(edge):
    creator = account()
    for url in (
        "http://crm.example.com/hooks",  # not https
        "https://10.1.2.3/hooks",  # private
        "https://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
        "https://[fd00:ec2::254]/",
        "https://127.0.0.1:9000/hooks",  # loopback: this edge is not a local run's
        "http://localhost:9000/hooks",
        "https://metadata.google.internal/",
        "https://user:pw@crm.example.com/",
    ):
        r = create(edge, creator, {"url": url})
        assert r.status_code == 400, (url, r.text)
        assert [d["field"] for d in r.json()["details"]] == ["url"], (url, r.json())
    r = create(edge, creator, {"url": "https://crm.example.com/h", "events": ["message.sent", "message.sent", "message.lost"], "secret": "mine"})
    assert r.status_code == 400
    assert sorted(d["field"] for d in r.json()["details"]) == ["events[1]", "events[2]", "secret"], r.json()
    assert edge.call("GET", "/webhooks", token(creator)).json() == {"endpoints": []}, "nothing refused was registered"


def test_an_account_has_at_most_ten_endpoints(edge):
    creator = account()
    for i in range(10):
        assert create(edge, creator, {"url": f"https://crm.example.com/{i}"}).status_code == 201
    r = create(edge, creator, {"url": "https://crm.example.com/10"})
    assert (r.status_code, r.json()["code"]) == (409, "webhook_limit_reached"), r.text
    first = edge.call("GET", "/webhooks", token(creator)).json()["endpoints"][0]["id"]
    assert edge.call("DELETE", f"/webhooks/{first}", token(creator)).status_code == 204
    assert create(edge, creator, {"url": "https://crm.example.com/10"}).status_code == 201, "room again once one is deleted"
