"""A signed webhook reaches a local receiver when a job ends, also when the receiver is down
for the first attempts; the deliveries are listed with the receiver's answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.core.webhooks import SIGNATURE_HEADER, verify_signature
from tests.integration.conftest import TinyModel
from tests.support.services import Broker, Service

pytestmark = pytest.mark.integration


class Receiver:
    """An HTTP endpoint that answers 503 to its first ``down_for`` calls, then verifies."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.calls: list[dict[str, object]] = []
        self.secret = ""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                call: dict[str, object] = {"body": body, "headers": dict(self.headers)}
                receiver.calls.append(call)
                if len(receiver.calls) <= receiver.down_for:
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"down for maintenance")
                    return
                try:
                    verify_signature(receiver.secret, self.headers[SIGNATURE_HEADER], body)
                except Exception as exc:
                    call["verified"] = str(exc)
                    self.send_response(400)
                    self.end_headers()
                    return
                call["verified"] = True
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"thanks")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(down_for=2)
    yield r
    r.close()


@pytest.fixture
def hooked_service(tmp_path: Path, broker: Broker) -> Iterator[Service]:
    svc = Service(data_dir=tmp_path / "data", broker_url=broker.url, extra_env={
        "ROBUSTDX_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "ROBUSTDX_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "ROBUSTDX_WEBHOOK_BACKOFF_SECONDS": "0.5",
    })
    svc.data_dir.mkdir(parents=True)
    svc.start_api()
    svc.start_worker("w1")
    yield svc
    svc.stop()


def test_a_signed_webhook_arrives_after_the_receiver_comes_back(
    hooked_service: Service, receiver: Receiver, tiny_derm: TinyModel
) -> None:
    svc = hooked_service
    key = svc.create_tenant()
    with svc.client(key) as c:
        hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]})
        assert hook.status_code == 201, hook.text
        receiver.secret = hook.json()["secret"]
        with tiny_derm.weights.open("rb") as fh:
            model = c.post("/v1/models", files={"file": (tiny_derm.weights.name, fh)},
                           data={"card": json.dumps(tiny_derm.card)})
        job = c.post(f"/v1/models/{model.json()['id']}/check").json()
    assert svc.wait_job(key, job["id"], timeout=120)["status"] == "succeeded"

    deadline = time.monotonic() + 60
    deliveries: list[dict] = []
    while time.monotonic() < deadline:
        with svc.client(key) as c:
            deliveries = c.get(f"/v1/webhooks/{hook.json()['id']}/deliveries").json()["items"]
        if deliveries and deliveries[0]["status"] != "pending":
            break
        time.sleep(0.3)
    [delivery] = deliveries
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    assert delivery["last_status_code"] == 200
    assert delivery["last_response"] == "thanks"
    assert [c.get("verified") for c in receiver.calls] == [None, None, True]
    event = json.loads(receiver.calls[-1]["body"])  # type: ignore[arg-type]
    assert event["type"] == "job.succeeded"
    assert event["data"]["job"]["id"] == job["id"]
    assert event["id"] == delivery["id"]
    # Every attempt carried the same signed body (retries do not change the event).
    assert len({c["body"] for c in receiver.calls}) == 1

    # Another tenant sees none of it; a URL the service must not call is refused.
    other = svc.create_tenant()
    with svc.client(other) as c:
        assert c.get(f"/v1/webhooks/{hook.json()['id']}/deliveries").status_code == 404
        refused = c.post("/v1/webhooks", json={"url": "http://10.0.0.8/x",
                                               "events": ["job.failed"]})
    assert refused.status_code == 422
    assert "not on the webhook allow-list" in refused.json()["error"]["message"]
