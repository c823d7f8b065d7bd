"""wrk loads: Lua scripts (distinct keys per request, v3 JSON bodies) and a JSON summary per run."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARK = "BENCHJSON "

# wrk's done() runs in the main Lua state: print one JSON line that wrkrun parses.
DONE_LUA = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# Each wrk thread gets its own number so that its keys never collide with another thread's.
THREAD_ID_LUA = r"""
local next_tid = 0
function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end
"""

B64_LUA = r"""
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or '=') .. (c and b64chars:sub(c4 + 1, c4 + 1) or '=')
  end
  return table.concat(out)
end
"""


def lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of ASCII is a valid Lua string literal


def v2_put_script(prefix: str, form_body: str, quota: int = 0) -> str:
    """PUT `<prefix><tid>-<n>` with a form body; with `quota`, each thread stops after that many 2xx
    answers and its keys wrap around (so at most `quota` distinct keys per thread)."""
    return (
        THREAD_ID_LUA
        + DONE_LUA
        + f"""
local prefix = {lua_str(prefix)}
local quota = {quota}
local counter = 0
local ok = 0
function init(args)
  wrk.method = "PUT"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = {lua_str(form_body)}
end
function request()
  counter = counter + 1
  local n = counter
  if quota > 0 then n = (counter - 1) % quota end
  return wrk.format(nil, prefix .. tid .. "-" .. n)
end
"""
        + (
            """
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 end
  if ok >= quota then wrk.thread:stop() end
end
"""
            if quota
            else ""
        )
    )


def v3_put_script(key_prefix: str, value_b64: str) -> str:
    return (
        THREAD_ID_LUA
        + DONE_LUA
        + B64_LUA
        + f"""
local key_prefix = {lua_str(key_prefix)}
local counter = 0
local value = {lua_str(value_b64)}
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = '{{"key":"' .. b64(key_prefix .. tid .. "-" .. counter) .. '","value":"' .. value .. '"}}'
  return wrk.format(nil, "/v3/kv/put", nil, body)
end
"""
    )


def static_script(method: str = "GET", body: str = "", content_type: str = "") -> str:
    lines = [DONE_LUA, f"wrk.method = {lua_str(method)}"]
    if body:
        lines.append(f"wrk.body = {lua_str(body)}")
    if content_type:
        lines.append(f'wrk.headers["Content-Type"] = {lua_str(content_type)}')
    return "\n".join(lines) + "\n"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect/read/write/timeout errors and non-2xx/3xx answers

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def run_wrk(
    script: Path,
    url: str,
    connections: int,
    duration: float,
    threads: int,
    timeout_s: float = 5.0,
) -> WrkResult:
    """One wrk run, bounded by `duration` (and a hard subprocess timeout)."""
    threads = max(1, min(threads, connections))
    duration = max(1, math.ceil(duration))  # wrk takes whole seconds
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            d = json.loads(line[len(MARK) :])
            errors = sum(d[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                requests=d["requests"],
                seconds=d["duration_us"] / 1e6,
                p50_ms=d["p50_us"] / 1000,
                p99_ms=d["p99_us"] / 1000,
                errors=errors,
            )
    raise RuntimeError(
        f"wrk gave no summary (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    )
