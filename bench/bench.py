"""Side-by-side benchmark: etcd 3.4 (--enable-v2=true) against etcdpy on loopback.

Run through `bench/run` (which installs etcd and wrk when missing). Every row runs the same load
against both servers, alternating A B B A between runs to cancel the machine's drift, and reports
the median with the spread (min-max) and the ratio etcdpy/etcd of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpc
import servers
import watchers
import wrkrun
from httpc import Conn
from servers import Server

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
T = TypeVar("T")
DASH = "\u2013"  # en dash: min-max spread

_rng = random.Random(20240501)
VALUE_256 = "".join(_rng.choice(string.ascii_letters + string.digits) for _ in range(256))
FORM_256 = "value=" + VALUE_256  # 256-byte value, nothing to escape
V3_VALUE_B64 = b64encode(_rng.randbytes(256)).decode()
GET_KEY = "/bench/get"
DIR_KEY = "/bench/dir"
DIR_KEYS = 1000
# settle(): a server is idle below this share of a CPU over one window; the wait is bounded.
SETTLE_IDLE_CPU = 0.05
SETTLE_WINDOW_S = 0.25
SETTLE_MAX_S = 20.0
V3_GET_KEY = b64encode(b"bench/v3get").decode()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_async(coro: Awaitable[T], timeout: float) -> T:
    """Run one asyncio step with a hard timeout (uvloop when available)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())


# ---------------------------------------------------------------- settings and rows


@dataclass
class Settings:
    runs: int
    duration: float  # seconds per wrk run
    warmup: float  # seconds of unmeasured wrk before a row's first run on each server
    longpoll_counts: tuple[int, ...]
    stream_counts: tuple[int, ...]
    stream_events: int
    memory_keys: int
    threads: int
    quick: bool
    only: tuple[str, ...]


@dataclass
class Row:
    name: str
    section: str
    run: Callable[[str, int], dict[str, float]]  # (server label, run number) -> metrics
    prepare: Callable[[str], None] | None = None  # once per server before the first run
    needs_main: bool = True  # runs against the long-running servers (else starts its own)


@dataclass
class RowResult:
    row: Row
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    note: str = ""


SECTIONS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "load": (
        "HTTP load (wrk, keep-alive; latency per request; CPU = server utime+stime per request; RSS after the run)",
        [
            ("rps", "req/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("cpu_us", "CPU µs/req"),
            ("rss_mb", "RSS MB"),
        ],
    ),
    "longpoll": (
        "Long-poll watch fan-out (N watchers wait on one key, one PUT; time until all have the event)",
        [
            ("notify_ms", "all notified ms"),
            ("kb_per_watcher", "RSS KB/watcher"),
            ("register_s", "open+register s"),
            ("missed", "missed"),
        ],
    ),
    "stream": (
        "Stream watchers (N stream watchers on one key, sequential PUTs; time until all have all events)",
        [
            ("notify_ms", "all events ms"),
            ("lost", "lost events"),
            ("register_s", "open+register s"),
            ("rss_mb", "RSS MB"),
        ],
    ),
    "memory": (
        "Memory and restart (fresh server, v2 PUT of distinct keys at 64 connections; SIGTERM, restart until a read succeeds)",
        [
            ("rss_mb", "RSS MB after writes"),
            ("write_rps", "write req/s"),
            ("restart_ms", "restart ms"),
            ("rss_restart_mb", "RSS MB after restart"),
        ],
    ),
}


class Bench:
    def __init__(self, settings: Settings, etcd_bin: str, etcdpy_cmd: list[str], tmp: Path) -> None:
        self.s = settings
        self.tmp = tmp
        self.etcd_bin = etcd_bin
        self.etcdpy_cmd = etcdpy_cmd
        self.scripts = tmp / "lua"
        self.scripts.mkdir()
        self.main: list[Server] = []
        self.prepared: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self.settle_s: list[float] = []  # each wait for idle servers before a run (settle())

    # ------------------------------------------------------------ servers

    def new_server(self, label: str, tag: str) -> Server:
        cmd = [self.etcd_bin] if label == "etcd" else list(self.etcdpy_cmd)
        return Server(label, cmd, REPO, self.tmp / f"{label}-{tag}.data", self.tmp / "logs")

    def start_main(self) -> None:
        for label in ("etcd", "etcdpy"):
            srv = self.new_server(label, "main")
            srv.start()
            took = srv.wait_ready()
            log(f"bench: {label} pid {srv.pid} on 127.0.0.1:{srv.client_port} ready in {took:.2f}s")
            self.main.append(srv)
        for srv in self.main:
            run_async(self.preload(srv), 120)

    async def preload(self, srv: Server) -> None:
        """The keys the read rows read: one v2 key, a 1,000-key v2 dir, one v3 key."""
        conn = Conn(srv.client_port)
        r = await conn.request("PUT", f"/v2/keys{GET_KEY}", FORM_256.encode(), FORM)
        assert r.status in (200, 201), r
        body = f'{{"key":"{V3_GET_KEY}","value":"{V3_VALUE_B64}"}}'.encode()
        r = await conn.request("POST", "/v3/kv/put", body, JSON)
        assert r.status == 200, r
        conn.close()

        async def writer(ids: range) -> None:
            c = Conn(srv.client_port)
            for i in ids:
                r = await c.request("PUT", f"/v2/keys{DIR_KEY}/k{i:04d}", FORM_256.encode(), FORM)
                assert r.status in (200, 201), r
            c.close()

        await asyncio.gather(*(writer(range(i, DIR_KEYS, 16)) for i in range(16)))
        check = Conn(srv.client_port)
        r = await check.request("GET", f"/v2/keys{DIR_KEY}?recursive=true")
        check.close()
        assert r.status == 200 and r.body.count(b'"key"') == DIR_KEYS + 1, (r.status, r.body[:200])

    def stop_main(self) -> None:
        for srv in self.main:
            srv.stop()

    def by_label(self, label: str) -> Server:
        return next(s for s in self.main if s.label == label)

    # ------------------------------------------------------------ rows

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        for c in (1, 16, 64, 256):
            rows.append(self.wrk_row(f"v2-put c={c}", c, "/", self.v2_put_script))
        for c in (1, 16, 64, 256):
            rows.append(self.wrk_row(f"v2-get c={c}", c, f"/v2/keys{GET_KEY}", self.get_script))
        for c in (1, 16):
            rows.append(
                self.wrk_row(
                    f"v2-get-recursive c={c}", c, f"/v2/keys{DIR_KEY}?recursive=true", self.get_script
                )
            )
        for c in (1, 16, 64):
            rows.append(self.wrk_row(f"v3-put c={c}", c, "/v3/kv/put", self.v3_put_script))
        for c in (1, 16, 64):
            rows.append(self.wrk_row(f"v3-range c={c}", c, "/v3/kv/range", self.v3_range_script))
        for n in self.s.longpoll_counts:
            rows.append(Row(f"watch-longpoll n={n}", "longpoll", self.longpoll_runner(n), needs_main=False))
        for n in self.s.stream_counts:
            rows.append(
                Row(
                    f"watch-stream n={n} events={self.s.stream_events}",
                    "stream",
                    self.stream_runner(n),
                    needs_main=False,
                )
            )
        rows.append(Row(f"memory keys={self.s.memory_keys}", "memory", self.memory_run, needs_main=False))
        return rows

    def script_file(self, name: str, text: str) -> Path:
        path = self.scripts / f"{name}.lua"
        path.write_text(text)
        return path

    def v2_put_script(self, tag: str) -> Path:
        return self.script_file(tag, wrkrun.v2_put_script(f"/v2/keys/bench/put/{tag}/", FORM_256))

    def v3_put_script(self, tag: str) -> Path:
        return self.script_file(tag, wrkrun.v3_put_script(f"bench/v3put/{tag}/", V3_VALUE_B64))

    def get_script(self, tag: str) -> Path:
        return self.script_file("get", wrkrun.static_script())

    def v3_range_script(self, tag: str) -> Path:
        return self.script_file("v3range", wrkrun.static_script("POST", f'{{"key":"{V3_GET_KEY}"}}', JSON))

    def wrk_row(self, name: str, conns: int, path: str, script: Callable[[str], Path]) -> Row:
        def tag_of(srv: Server, run: int | str) -> str:
            return f"{name.replace(' ', '').replace('=', '')}-{srv.label}-{run}"

        def prepare(label: str) -> None:
            srv = self.by_label(label)
            if self.s.warmup > 0:
                url = f"http://127.0.0.1:{srv.client_port}{path}"
                wrkrun.run_wrk(script(tag_of(srv, "warm")), url, conns, self.s.warmup, self.s.threads)

        def run(label: str, n: int) -> dict[str, float]:
            srv = self.by_label(label)
            url = f"http://127.0.0.1:{srv.client_port}{path}"
            lua = script(tag_of(srv, n))
            cpu0 = srv.cpu_seconds()
            res = wrkrun.run_wrk(lua, url, conns, self.s.duration, self.s.threads)
            cpu1 = srv.cpu_seconds()
            if res.errors:
                self.errors.append(
                    f"{name} {srv.label} run {n}: {res.errors} errors of {res.requests} requests"
                )
            return {
                "rps": res.rps,
                "p50_ms": res.p50_ms,
                "p99_ms": res.p99_ms,
                "cpu_us": (cpu1 - cpu0) / max(res.requests, 1) * 1e6,
                "rss_mb": srv.rss_bytes() / 2**20,
            }

        return Row(name, "load", run, prepare)

    def longpoll_runner(self, n: int) -> Callable[[str, int], dict[str, float]]:
        def run(label: str, run: int) -> dict[str, float]:
            with self.fresh(label, f"lp{n}-{run}") as srv:
                res, rss0, rss1 = run_async(
                    watchers.long_poll_fanout(srv.client_port, "/bench/watch", n, srv.rss_bytes, timeout=60),
                    180,
                )
            if res.missed or res.failed:
                self.errors.append(
                    f"watch-longpoll n={n} {srv.label} run {run}: {res.missed} missed, {res.failed} failed"
                )
            return {
                "notify_ms": res.all_notified_ms,
                "kb_per_watcher": (rss1 - rss0) / n / 1024,
                "register_s": res.registered_s,
                "missed": float(res.missed),
            }

        return run

    def stream_runner(self, n: int) -> Callable[[str, int], dict[str, float]]:
        def run(label: str, run: int) -> dict[str, float]:
            with self.fresh(label, f"st{n}-{run}") as srv:
                res = run_async(
                    watchers.stream_watchers(
                        srv.client_port, "/bench/watch", n, self.s.stream_events, timeout=60
                    ),
                    180,
                )
                rss = srv.rss_bytes()
            if res.missed or res.failed:
                self.errors.append(
                    f"watch-stream n={n} {srv.label} run {run}: {res.missed} events lost, {res.failed} failed"
                )
            return {
                "notify_ms": res.all_notified_ms,
                "lost": float(res.missed),
                "register_s": res.registered_s,
                "rss_mb": rss / 2**20,
            }

        return run

    @contextlib.contextmanager
    def fresh(self, label: str, tag: str) -> Iterator[Server]:
        """A fresh server of kind `label` with its own empty data dir, stopped and removed after."""
        srv = self.new_server(label, tag)
        try:
            srv.start()
            srv.wait_ready()
            yield srv
        finally:
            srv.stop()
            shutil.rmtree(srv.data_dir, ignore_errors=True)

    def memory_run(self, label: str, run: int) -> dict[str, float]:
        """A fresh server: write N distinct keys at 64 connections, RSS; SIGTERM; restart until a read works."""
        n = self.s.memory_keys
        paths = [f"/v2/keys/mem/k{i}" for i in range(n)]
        with self.fresh(label, f"mem{run}") as srv:
            t0 = time.perf_counter()
            ok = run_async(httpc.put_many(srv.client_port, paths, FORM_256.encode(), FORM, 64, 900), 960)
            write_s = time.perf_counter() - t0
            if ok != n:
                self.errors.append(f"memory {label} run {run}: {n - ok} of {n} writes failed")
            time.sleep(1.0)
            rss = srv.rss_bytes()
            srv.stop()
            t1 = time.perf_counter()
            srv.start()
            srv.wait_ready(paths[-1], timeout=120)
            restart_s = time.perf_counter() - t1
            time.sleep(0.5)
            rss2 = srv.rss_bytes()
        return {
            "rss_mb": rss / 2**20,
            "write_rps": n / write_s,
            "restart_ms": restart_s * 1000,
            "rss_restart_mb": rss2 / 2**20,
        }

    # ------------------------------------------------------------ driving

    def settle(self) -> None:
        """Before each run: wait until neither main server (nor any process of theirs) is busy,
        then flush the page cache's dirty pages. A server's leftovers (etcd saves a snapshot in
        the background for 2-5 s at 200,000-500,000 keys; etcdpy's snapshot child; their
        writeback) would otherwise run during the other's run. Bounded by SETTLE_MAX_S."""
        servers = [srv for srv in self.main if srv.alive()]
        t0 = time.monotonic()
        while servers and time.monotonic() - t0 < SETTLE_MAX_S:
            before = [srv.cpu_seconds() for srv in servers]
            time.sleep(SETTLE_WINDOW_S)
            busy = max(srv.cpu_seconds() - b for srv, b in zip(servers, before, strict=True))
            if busy / SETTLE_WINDOW_S < SETTLE_IDLE_CPU:
                break
        os.sync()
        waited = time.monotonic() - t0
        self.settle_s.append(waited)
        if waited > 1.0:
            log(f"bench: waited {waited:.1f}s for the servers to go idle")

    def run_row(self, row: Row) -> RowResult:
        result = RowResult(row, {"etcd": [], "etcdpy": []})
        for i in range(self.s.runs):
            order = ("etcd", "etcdpy") if i % 2 == 0 else ("etcdpy", "etcd")  # A B, B A, A B, ...
            for label in order:
                if row.needs_main:
                    srv = self.by_label(label)
                    if not srv.alive():
                        raise RuntimeError(
                            f"{label} (pid {srv.proc and srv.proc.pid}) died; see {srv.log_dir}"
                        )
                if row.prepare is not None and (row.name, label) not in self.prepared:
                    self.prepared.add((row.name, label))
                    self.settle()
                    row.prepare(label)
                self.settle()
                metrics = row.run(label, i)
                result.samples[label].append(metrics)
                shown = "  ".join(f"{k}={fmt(v)}" for k, v in metrics.items())
                log(f"bench: {row.name:<32} {label:<6} run {i + 1}/{self.s.runs}: {shown}")
        return result


# ---------------------------------------------------------------- report


def fmt(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.3f}"


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}{DASH}{fmt(max(values))})"


def ratio(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return "-"
    ma, mb = statistics.median(a), statistics.median(b)
    if mb == 0:
        return "-" if ma == 0 else "inf"
    return f"**{ma / mb:.2f}**"


def md_table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    return "\n".join(out)


def render(results: list[RowResult], meta: list[str], errors: list[str]) -> str:
    parts = ["# etcdpy vs etcd benchmark", "", *meta, ""]
    for section, (title, cols) in SECTIONS.items():
        rows = [r for r in results if r.row.section == section]
        if not rows:
            continue
        header = ["row", "server", *(label for _, label in cols)]
        lines: list[list[str]] = []
        for r in rows:
            for label in ("etcd", "etcdpy"):
                lines.append(
                    [r.row.name if label == "etcd" else "", label]
                    + [cell([s[k] for s in r.samples[label]]) for k, _ in cols]
                )
            lines.append(
                ["", "etcdpy/etcd"]
                + [
                    ratio([s[k] for s in r.samples["etcdpy"]], [s[k] for s in r.samples["etcd"]])
                    for k, _ in cols
                ]
            )
        parts += [f"## {title}", "", md_table(header, lines), ""]
    if errors:
        parts += ["## Errors during the runs", "", *(f"- {e}" for e in errors), ""]
    return "\n".join(parts)


def machine_meta(s: Settings, etcd_bin: str, etcdpy_cmd: list[str]) -> list[str]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    etcd_ver = subprocess.run([etcd_bin, "--version"], capture_output=True, text=True, timeout=10).stdout
    etcd_ver = etcd_ver.splitlines()[0] if etcd_ver else "?"
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    return [
        f"- date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; mode: {'quick' if s.quick else 'full'}"
        + (f"; only: {', '.join(s.only)}" if s.only else ""),
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}",
        f"- etcd: {etcd_bin} ({etcd_ver}); etcdpy: `{' '.join(etcdpy_cmd)}` at {head or '?'}",
        f"- {s.runs} run(s) per row and server, alternating A B / B A; wrk {s.duration:g}s per run, "
        f"{s.threads} threads, {s.warmup:g}s warm-up per row; cells are median (min{DASH}max)",
        "- ratio = median(etcdpy) / median(etcd): above 1 is better for req/s, below 1 for time, CPU and memory",
        "- both servers and the load generator share the machine; only the ratios within one run count",
        "- CPU and memory are each server's whole process tree (etcdpy's fsync helper and snapshot children"
        " too): CPU = utime+stime, reaped children included; memory = the sum of PSS (one process: ~RSS)",
        f"- before each run both servers were idle (< {SETTLE_IDLE_CPU:.0%} of a CPU over {SETTLE_WINDOW_S:g}s,"
        f" waiting at most {SETTLE_MAX_S:g}s) and dirty pages were flushed (sync)",
    ]


# ---------------------------------------------------------------- main


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def etcdpy_command() -> list[str]:
    venv = REPO / ".venv" / "bin" / "python"
    return [str(venv) if venv.exists() else sys.executable, "-m", "app"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 run per row, short loads, fewer watchers"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ROW-PREFIX",
        help="run only the rows whose name starts with this (repeatable, or comma-separated)",
    )
    p.add_argument("--runs", type=int, help="runs per row and server (default 3, --quick 1)")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 5, --quick 2)")
    p.add_argument(
        "--etcd", default=shutil.which("etcd") or "etcd", help="etcd binary (default: etcd on PATH)"
    )
    p.add_argument(
        "--out", type=Path, help="Markdown output (default bench/results/<date>[-quick|-partial].md)"
    )
    p.add_argument("--list", action="store_true", help="list the row names and exit")
    return p.parse_args(argv)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    only = tuple(x.strip() for o in a.only for x in o.split(",") if x.strip())
    nofile = raise_nofile()
    s = Settings(
        runs=a.runs or (1 if a.quick else 3),
        duration=a.duration or (2.0 if a.quick else 5.0),
        warmup=1.0,
        longpoll_counts=(100, 300, 1000) if a.quick else (100, 1000, 5000),
        stream_counts=(100, 300) if a.quick else (100, 1000),
        stream_events=100,
        memory_keys=20_000 if a.quick else 100_000,
        threads=max(1, min(os.cpu_count() or 1, 4)),
        quick=a.quick,
        only=only,
    )
    need = max(s.longpoll_counts + s.stream_counts) + 256
    if nofile < need:
        keep = tuple(n for n in s.longpoll_counts if n + 256 <= nofile)
        log(f"bench: RLIMIT_NOFILE is {nofile}: long-poll watcher counts limited to {keep}")
        s.longpoll_counts = keep
        s.stream_counts = tuple(n for n in s.stream_counts if n + 256 <= nofile)

    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="etcdpy-bench-"))
    etcdpy_cmd = etcdpy_command()
    bench = Bench(s, a.etcd, etcdpy_cmd, tmp)
    rows = [r for r in bench.rows() if not only or any(r.name.startswith(o) for o in only)]
    if a.list:
        print("\n".join(r.name for r in bench.rows()))
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    if not rows:
        log(f"bench: no row matches {only}; rows are:\n  " + "\n  ".join(r.name for r in bench.rows()))
        return 2
    meta = machine_meta(s, a.etcd, etcdpy_cmd)
    results: list[RowResult] = []
    ok = False
    t_start = time.perf_counter()
    try:
        log(f"bench: temp dir {tmp}; {len(rows)} rows, {s.runs} run(s) each")
        if any(r.needs_main for r in rows):
            bench.start_main()
        for row in rows:
            if not row.needs_main:
                bench.stop_main()  # the own-server rows come last: free the machine for them
            results.append(bench.run_row(row))
        ok = True
    except KeyboardInterrupt:
        log("bench: interrupted; stopping the servers")
    except Exception as exc:
        log(f"bench: failed: {exc!r}; logs in {tmp / 'logs'}")
        import traceback

        traceback.print_exc()
    finally:
        servers.stop_all()
    meta.append(
        f"- took {time.perf_counter() - t_start:.0f}s" + ("" if ok else "; INCOMPLETE (stopped early)")
    )
    if results:
        if bench.settle_s:
            meta.append(
                f"- waits for idle servers: {len(bench.settle_s)}, median {statistics.median(bench.settle_s):.2f}s,"
                f" max {max(bench.settle_s):.1f}s"
            )
        text = render(results, meta, bench.errors)
        print(text)
        out: Path = a.out or BENCH_DIR / "results" / (
            dt.date.today().isoformat()
            + ("-quick" if s.quick else "-partial" if only or not ok else "")
            + ".md"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"bench: table written to {out}")
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:  # keep the logs, drop the data
        for data in tmp.glob("*.data"):
            shutil.rmtree(data, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
