"""Which HTTP server should serve ClientApp? etcdpy under each choice against etcd 3.4, same loads.

    .venv/bin/python bench/http_servers.py                      # all choices, 3 runs, 5 s each
    .venv/bin/python bench/http_servers.py --servers uvicorn,lean --runs 5 --rows v2-get,v2-put-c64

Each row starts fresh servers (etcd and one etcdpy per choice, via bench/launch_with_server.py),
preloads the keys it reads, warms each up, then runs wrk on every server in turn, alternating
the order each run (A B C / C B A ...). Cells: median req/s (min-max), the ratio to etcd's median,
server CPU µs per request (utime+stime of the whole process), p99. Ports 24100-24999 on 127.0.0.1;
every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import servers
import wrkrun
from servers import Server

import bench  # the main benchmark: same values and keys

servers.PORT_LO, servers.PORT_HI = 24100, 24999
REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "bench" / "launch_with_server.py"
CHOICES: dict[str, dict[str, str]] = {
    "uvicorn": {"ETCDPY_HTTP_SERVER": "uvicorn"},
    "uvicorn-tuned": {"ETCDPY_HTTP_SERVER": "uvicorn-tuned"},
    "granian": {"ETCDPY_HTTP_SERVER": "granian"},
    "lean-batch": {"ETCDPY_HTTP_SERVER": "lean-batch"},
    "lean-eager": {"ETCDPY_HTTP_SERVER": "lean-eager"},
    "lean": {"ETCDPY_HTTP_SERVER": "lean"},
    "lean-gc": {"ETCDPY_HTTP_SERVER": "lean", "ETCDPY_GC": "freeze"},
    "ceiling": {},  # bench/ceiling_server.py: HTTP + a durable group-commit log, no store, no Raft
}


@dataclass
class RowSpec:
    name: str
    conns: int
    path: str
    script: Callable[[Path, str], Path]  # (dir, tag) -> lua file


def _write(d: Path, name: str, text: str) -> Path:
    p = d / f"{name}.lua"
    p.write_text(text)
    return p


ROWS = [
    RowSpec(
        "v2-get-c64", 64, f"/v2/keys{bench.GET_KEY}", lambda d, t: _write(d, "get", wrkrun.static_script())
    ),
    RowSpec(
        "v2-put-c64",
        64,
        "/",
        lambda d, t: _write(d, t, wrkrun.v2_put_script(f"/v2/keys/bench/put/{t}/", bench.FORM_256)),
    ),
    RowSpec(
        "v2-put-c1",
        1,
        "/",
        lambda d, t: _write(d, t, wrkrun.v2_put_script(f"/v2/keys/bench/put/{t}/", bench.FORM_256)),
    ),
    RowSpec(
        "v3-range-c64",
        64,
        "/v3/kv/range",
        lambda d, t: _write(
            d, "v3range", wrkrun.static_script("POST", f'{{"key":"{bench.V3_GET_KEY}"}}', bench.JSON)
        ),
    ),
    RowSpec(
        "v3-put-c64",
        64,
        "/v3/kv/put",
        lambda d, t: _write(d, t, wrkrun.v3_put_script(f"bench/v3put/{t}/", bench.V3_VALUE_B64)),
    ),
]


def request(srv: Server, method: str, path: str, body: str, ctype: str) -> int:
    conn = http.client.HTTPConnection(servers.HOST, srv.client_port, timeout=10)
    try:
        conn.request(method, path, body.encode(), {"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def preload(srv: Server) -> None:
    assert request(srv, "PUT", f"/v2/keys{bench.GET_KEY}", bench.FORM_256, bench.FORM) in (200, 201)
    body = json.dumps({"key": bench.V3_GET_KEY, "value": bench.V3_VALUE_B64})
    assert request(srv, "POST", "/v3/kv/put", body, bench.JSON) == 200


def start(label: str, tmp: Path, tag: str) -> Server:
    if label == "etcd":
        cmd = ["/usr/bin/etcd"]
    elif label == "ceiling":
        cmd = [sys.executable, str(REPO / "bench" / "ceiling_server.py")]
    else:
        env = [f"{k}={v}" for k, v in CHOICES[label].items()]
        cmd = ["/usr/bin/env", *env, sys.executable, str(LAUNCHER)]  # env execs: same PID
    srv = Server(label, cmd, REPO, tmp / f"{label}-{tag}.data", tmp / "logs")
    srv.start()
    return srv


def run_row(
    spec: RowSpec, labels: list[str], args: argparse.Namespace, tmp: Path
) -> dict[str, list[dict[str, float]]]:
    lua_dir = tmp / "lua"
    lua_dir.mkdir(exist_ok=True)
    started: dict[str, Server] = {}
    try:
        for label in labels:
            started[label] = start(label, tmp, spec.name)
        for srv in started.values():
            srv.wait_ready()
            preload(srv)
        threads = min(args.threads, spec.conns)
        for label, srv in started.items():  # warm-up, unmeasured
            url = f"http://127.0.0.1:{srv.client_port}{spec.path}"
            wrkrun.run_wrk(
                spec.script(lua_dir, f"{spec.name}-{label}-warm"), url, spec.conns, args.warmup, threads
            )
        samples: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
        for run in range(args.runs):
            order = labels if run % 2 == 0 else labels[::-1]
            for label in order:
                srv = started[label]
                url = f"http://127.0.0.1:{srv.client_port}{spec.path}"
                lua = spec.script(lua_dir, f"{spec.name}-{label}-{run}")
                cpu0 = srv.cpu_seconds()
                res = wrkrun.run_wrk(lua, url, spec.conns, args.duration, threads)
                cpu1 = srv.cpu_seconds()
                samples[label].append(
                    {
                        "rps": res.rps,
                        "cpu_us": (cpu1 - cpu0) / max(res.requests, 1) * 1e6,
                        "p99_ms": res.p99_ms,
                        "errors": float(res.errors),
                    }
                )
                print(
                    f"  {spec.name} run {run} {label:14s} {res.rps:9.0f} req/s "
                    f"cpu {samples[label][-1]['cpu_us']:6.1f} µs/req p99 {res.p99_ms:7.2f} ms"
                    + (f" ERRORS {res.errors}" if res.errors else ""),
                    file=sys.stderr,
                    flush=True,
                )
        return samples
    finally:
        for srv in started.values():
            srv.stop()


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def render(results: dict[str, dict[str, list[dict[str, float]]]], labels: list[str]) -> str:
    lines = [
        "| row | server | req/s median (min-max) | /etcd | CPU µs/req | CPU/etcd | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, samples in results.items():
        base = med([s["rps"] for s in samples.get("etcd", [])])
        base_cpu = med([s["cpu_us"] for s in samples.get("etcd", [])])
        for label in labels:
            ss = samples[label]
            rps = [s["rps"] for s in ss]
            cpu = med([s["cpu_us"] for s in ss])
            lines.append(
                f"| {row} | {label} | {med(rps):.0f} ({min(rps):.0f}-{max(rps):.0f}) | "
                f"{med(rps) / base:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f} | "
                f"{med([s['p99_ms'] for s in ss]):.1f} | {sum(s['errors'] for s in ss):.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="uvicorn,uvicorn-tuned,granian,lean")
    ap.add_argument("--rows", default=",".join(r.name for r in ROWS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    labels = ["etcd", *[s for s in args.servers.split(",") if s]]
    for label in labels[1:]:
        if label not in CHOICES:
            ap.error(f"unknown server {label}; choose from {', '.join(CHOICES)}")
    wanted = set(args.rows.split(","))
    t0 = time.time()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="http-servers-") as tmp_s:
        try:
            for spec in ROWS:
                if spec.name in wanted:
                    print(f"row {spec.name}", file=sys.stderr, flush=True)
                    results[spec.name] = run_row(spec, labels, args, Path(tmp_s))
        finally:
            servers.stop_all()
    table = render(results, labels)
    head = (
        f"HTTP servers for ClientApp, {dt.datetime.now():%Y-%m-%d %H:%M}; {args.runs} runs x "
        f"{args.duration:g}s per row and server, alternating order; took {time.time() - t0:.0f}s"
    )
    print(head + "\n\n" + table)
    if args.out is not None:
        args.out.write_text(head + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
