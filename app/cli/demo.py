"""``make demo``: a full audit of a zoo model on a fresh phantom set, against the running
service, ending with the path of the HTML report."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.cli.client import ApiError, Client, default_key

DEMO_ATTACKS = [
    {"name": "fgsm", "params": {"eps": [1 / 255, 2 / 255, 4 / 255]}},
    {"name": "pgd", "params": {"eps": [1 / 255, 2 / 255, 4 / 255], "steps": 10}},
    {"name": "gap", "params": {"eps": 4 / 255}},
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--kind", default="chest", choices=["chest", "derm", "fundus"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    args = parser.parse_args(argv)

    from models.phantoms.export import write_phantom_archive

    key = default_key()
    if key is None:
        sys.stderr.write("no API key: start the service with `make run` first\n")
        return 2
    with Client(args.url, key) as client:
        try:
            model = next(m for m in client.get("/v1/models", limit=200)["items"]
                         if args.kind in m["name"].lower())
        except StopIteration:
            sys.stderr.write(f"no zoo model for {args.kind!r} is registered\n")
            return 2
        size = int(model["card"]["input"]["height"])
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / f"{args.kind}.zip"
            fmt = "csv" if args.kind == "chest" else "imagefolder"
            write_phantom_archive(args.kind, args.n, size, fmt, archive, seed=2026)
            dataset = client.upload_dataset(archive, fmt, name=f"demo {args.kind} phantoms")
        print(f"dataset {dataset['id']}: {dataset['count']} images")
        try:
            job = client.post("/v1/audits", {
                "model_id": model["id"], "dataset_id": dataset["id"], "attacks": DEMO_ATTACKS,
                "policy": {"min_clean_accuracy": 0.5,
                           "max_fooling_rate": {"pgd:eps=4/255,steps=10": 0.5}},
                "seed": 0,
            })
        except ApiError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        print(f"audit {job['id']} submitted; waiting")

        def show(status: dict[str, Any]) -> None:
            print(f"  {status['stage']:<12} {float(status['progress']) * 100:5.1f}%", flush=True)

        final = client.wait(job["id"], show, poll=3.0)
        if final["status"] != "succeeded":
            sys.stderr.write(f"audit {final['status']}: {final.get('error')}\n")
            return 1
        html = client.download(f"/v1/audits/{job['id']}/report.html",
                               args.out / "report.html")
        client.download(f"/v1/audits/{job['id']}/report", args.out / "report.json")
        client.download(f"/v1/audits/{job['id']}/report.xml", args.out / "report.xml")
    print(f"HTML report: {html.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
