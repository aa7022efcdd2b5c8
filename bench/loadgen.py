"""A multi-process HTTP load generator (aiohttp), so the client is never the bottleneck.

Each process runs ``connections`` closed-loop clients on one event loop; ``procs``
processes together give ``procs * connections`` concurrent clients. Request bodies are
built before timing. Each process reports its latencies and, from ``Server-Timing``
headers, the sum of every stage the server named.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from multiprocessing.pool import Pool


@dataclass
class Request:
    """One prepared request: body bytes and headers (content type, auth, ...)."""

    body: bytes
    headers: dict[str, str]


@dataclass
class Part:
    latencies_ms: list[float]
    start: float
    end: float
    errors: int
    stages_ms: dict[str, float] = field(default_factory=dict)
    timed: int = 0  # responses that carried Server-Timing


def _stages(header: str | None, into: dict[str, float]) -> bool:
    if not header:
        return False
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            into[name] = into.get(name, 0.0) + float(dur)
    return True


async def _run(url: str, requests: list[Request], count: int, connections: int,
               start_at: float) -> Part:
    import aiohttp

    latencies: list[float] = []
    stages: dict[str, float] = {}
    errors, timed = 0, 0
    counter = iter(range(count))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors, timed
            for i in counter:
                req = requests[i % len(requests)]
                t0 = time.perf_counter()
                async with session.post(url, data=req.body, headers=req.headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                    if _stages(resp.headers.get("server-timing"), stages):
                        timed += 1
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += 0 if ok else 1

        await asyncio.sleep(max(0.0, start_at - time.time()))
        start = time.time()
        await asyncio.gather(*[client() for _ in range(connections)])
        end = time.time()
    return Part(latencies, start, end, errors, stages, timed)


def run_part(url: str, requests: list[Request], count: int, connections: int,
             start_at: float) -> Part:
    return asyncio.run(_run(url, requests, count, connections, start_at))


@dataclass
class Load:
    latencies_ms: list[float]
    seconds: float
    errors: int
    stages_ms: dict[str, float]  # mean per timed response


def drive(pool: Pool, url: str, requests: list[Request], total: int, procs: int,
          connections: int) -> Load:
    """``total`` requests from ``procs`` processes x ``connections`` clients, all starting
    at the same moment."""
    start_at = time.time() + 0.5
    shares = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
    parts: list[Part] = pool.starmap(run_part, [
        (url, requests, share, connections, start_at) for share in shares if share])
    timed = sum(p.timed for p in parts)
    stages: dict[str, float] = {}
    for p in parts:
        for k, v in p.stages_ms.items():
            stages[k] = stages.get(k, 0.0) + v
    return Load(
        latencies_ms=[v for p in parts for v in p.latencies_ms],
        seconds=max(p.end for p in parts) - min(p.start for p in parts),
        errors=sum(p.errors for p in parts),
        stages_ms={k: v / timed for k, v in stages.items()} if timed else {},
    )
