#!/usr/bin/env python3
# ruff: noqa
# mypy: ignore-errors
# Copied verbatim from the project spec (spec/golden/record.py); only these four comment lines were added.
# Used by tests/diff to replay the golden suites and by tests/support/normalize.py for masking.
"""Golden transcript recorder for the etcd-compatible server project.

Runs scenarios (sequences of HTTP exchanges) against an etcd-like endpoint and
writes one JSON object per exchange (JSON Lines).  Only the Python 3.11 stdlib
is used.  A tiny raw-socket HTTP/1.1 client is used on purpose, so that paths
are sent byte-for-byte (no client-side normalisation), chunk boundaries and
trailers of chunked responses are visible, and streams can be cut after N
lines or a deadline.

Usage:
  python3 record.py --suite v2 --endpoint http://127.0.0.1:42379 --out v2.jsonl
  python3 record.py --suite v3 --endpoint http://127.0.0.1:42379 --out v3.jsonl
  python3 record.py --suite cluster --endpoint http://127.0.0.1:42381 \
      --endpoints http://127.0.0.1:42381,http://127.0.0.1:42383,http://127.0.0.1:42385 \
      --out cluster.jsonl
  python3 record.py --suite v2 --only v2.keys.set_create,v2.watch.stream ...
  python3 record.py --list --suite v3
  python3 record.py --show v2.jsonl --only v2.watch          # readable dump
  python3 record.py --diff v2.jsonl /tmp/mine-v2.jsonl       # compare an implementation run

The suites expect a *fresh* server (empty data dir) started with
--enable-v2=true --cors '*'; absolute indices in the output then only depend on
the scenario order.  Scenarios use disjoint key prefixes, so most can also be
run alone with --only.

Record format (one line per exchange):
  {"suite", "scenario", "seq", "role": "main"|"background"|"bulk",
   "t_ms": start time relative to scenario start,
   "request": {"endpoint", "method", "target", "path", "query", "headers": [[k, v]...],
               "body": str|null, "body_len", "chunked_parts": [...]?},
   "response": {"status", "reason", "headers": [[k, v]...] (wire order, Date kept),
                "body": str (de-chunked), "json": parsed|null,
                "chunks": [str...]|null (chunk payloads as sent, when chunked),
                "lines": [parsed JSON per non-empty line]|null (streams),
                "trailers": [[k, v]...], "complete": bool, "cut_reason": str|null,
                "elapsed_ms": int} | {"error": "..."},
   "note": str}
A {"role": "sleep"} line records deliberate pauses.
"""

import argparse
import base64
import json
import socket
import sys
import threading
import time
import urllib.parse

BODY_CAP = 8192  # cap stored body text (snapshot blobs, huge values); body_len keeps the real size


# ---------------------------------------------------------------- raw HTTP

class HTTPResult:
    def __init__(self):
        self.status = None
        self.reason = None
        self.headers = []
        self.chunks = None
        self.body = b""
        self.trailers = []
        self.complete = False
        self.cut_reason = None
        self.error = None
        self.elapsed_ms = None


class RawConn:
    """One request on one TCP connection (Connection: close)."""

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline")
        self.sock.settimeout(min(remaining, 30))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            if time.monotonic() >= deadline:
                raise TimeoutError("deadline")
            return True
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, sep, deadline):
        while sep not in self.buf:
            if not self._fill(deadline):
                raise EOFError("closed")
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def read_n(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError("closed")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_all(self, deadline):
        while True:
            if not self._fill(deadline):
                break
        out, self.buf = self.buf, b""
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def http_exchange(host, port, method, target, headers, body, *, timeout=10.0,
                  max_lines=None, chunked_parts=None, line_cb=None):
    """Perform one exchange.  Returns HTTPResult.

    timeout:   overall deadline (seconds) for the whole response; a stream that
               is still open at the deadline is cut (complete=False).
    max_lines: for chunked streams, cut after this many newline-terminated
               JSON lines have been received.
    chunked_parts: send the body with Transfer-Encoding: chunked; list of
               (delay_seconds_from_start, bytes|None); None = final 0-chunk.
    """
    res = HTTPResult()
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        conn = RawConn(host, port, timeout=min(timeout, 30))
    except OSError as e:
        res.error = f"connect: {e}"
        return res
    try:
        lines = [f"{method} {target} HTTP/1.1"]
        for k, v in headers:
            lines.append(f"{k}: {v}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if chunked_parts is None:
            conn.sock.sendall(head + (body or b""))
        else:
            conn.sock.sendall(head)

            def writer():
                for delay, part in chunked_parts:
                    wait = t0 + delay - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    try:
                        if part is None:
                            conn.sock.sendall(b"0\r\n\r\n")
                        else:
                            conn.sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                    except OSError:
                        return
            threading.Thread(target=writer, daemon=True).start()

        status_line = conn.read_until(b"\r\n", deadline).decode("latin-1")
        parts = status_line.split(" ", 2)
        res.status = int(parts[1])
        res.reason = parts[2] if len(parts) > 2 else ""
        hdr_blob = conn.read_until(b"\r\n\r\n", deadline) if not conn.buf.startswith(b"\r\n") else b""
        if conn.buf.startswith(b"\r\n") and not hdr_blob:
            conn.buf = conn.buf[2:]
        for ln in hdr_blob.decode("latin-1").split("\r\n"):
            if ln:
                k, _, v = ln.partition(":")
                res.headers.append([k, v.strip()])
        hmap = {k.lower(): v for k, v in res.headers}
        no_body = method == "HEAD" or res.status in (204, 304) or 100 <= res.status < 200
        if no_body:
            res.complete = True
        elif hmap.get("transfer-encoding", "").lower() == "chunked":
            res.chunks = []
            acc = b""
            nlines = 0
            while True:
                try:
                    size_line = conn.read_until(b"\r\n", deadline)
                except TimeoutError:
                    res.cut_reason = "deadline"
                    break
                except EOFError:
                    res.cut_reason = "connection closed mid-stream"
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers
                    try:
                        tr = conn.read_until(b"\r\n\r\n", deadline) if not conn.buf.startswith(b"\r\n") else b""
                    except (TimeoutError, EOFError):
                        tr = b""
                    for ln in tr.decode("latin-1").split("\r\n"):
                        if ln:
                            k, _, v = ln.partition(":")
                            res.trailers.append([k, v.strip()])
                    res.complete = True
                    break
                try:
                    data = conn.read_n(size, deadline)
                    conn.read_n(2, deadline)
                except (TimeoutError, EOFError) as e:
                    res.cut_reason = f"mid-chunk {e}"
                    break
                res.chunks.append(data)
                acc += data
                if line_cb is not None:
                    line_cb(acc)
                if max_lines is not None:
                    nlines = sum(1 for x in acc.split(b"\n")[:-1] if x.strip())
                    if nlines >= max_lines:
                        res.cut_reason = f"max_lines={max_lines}"
                        break
            res.body = acc
        elif "content-length" in hmap:
            n = int(hmap["content-length"])
            try:
                res.body = conn.read_n(n, deadline)
                res.complete = True
            except (TimeoutError, EOFError) as e:
                res.cut_reason = str(e)
        else:
            try:
                res.body = conn.read_all(deadline)
                res.complete = True
            except TimeoutError:
                res.cut_reason = "deadline"
    except (TimeoutError, EOFError) as e:
        res.error = res.error or f"{type(e).__name__}: {e}"
        res.cut_reason = res.cut_reason or "deadline before headers"
    except OSError as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
        res.elapsed_ms = int((time.monotonic() - t0) * 1000)
    return res


# ---------------------------------------------------------------- helpers

def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def unb64(s):
    return base64.b64decode(s).decode("utf-8", "replace")


def _try_json(text):
    try:
        return json.loads(text)
    except Exception:
        return None


def _cap(text):
    if text is not None and len(text) > BODY_CAP:
        return text[:BODY_CAP] + f"...[truncated, {len(text)} chars total]"
    return text


class Recorder:
    def __init__(self, suite, out, endpoints):
        self.suite = suite
        self.out = out
        self.endpoints = endpoints  # list of "http://host:port"
        self.scenario = None
        self.seq = 0
        self.t_scn = 0.0
        self.lock = threading.Lock()
        self.pending = []
        self.count_exchanges = 0
        self.scenarios_run = []

    # -- output
    def _emit(self, obj):
        with self.lock:
            self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
            self.out.flush()
            self.count_exchanges += 1

    def start(self, name, description):
        self.scenario = name
        self.seq = 0
        self.t_scn = time.monotonic()
        self.scenarios_run.append(name)
        self._emit({"suite": self.suite, "scenario": name, "seq": 0, "role": "scenario",
                    "description": description})

    def sleep(self, secs, note=""):
        self.seq += 1
        self._emit({"suite": self.suite, "scenario": self.scenario, "seq": self.seq,
                    "role": "sleep", "seconds": secs, "note": note})
        time.sleep(secs)

    # -- requests
    def _build(self, method, path, *, query=None, form=None, body=None, json_body=None,
               headers=None, ep=0, content_type=None, no_default_headers=False):
        endpoint = self.endpoints[ep] if isinstance(ep, int) else ep
        u = urllib.parse.urlsplit(endpoint)
        target = path
        if query is not None:
            qs = query if isinstance(query, str) else urllib.parse.urlencode(query)
            target = f"{path}?{qs}"
        raw = None
        ctype = content_type
        if form is not None:
            raw = (form if isinstance(form, str) else urllib.parse.urlencode(form)).encode()
            ctype = ctype or "application/x-www-form-urlencoded"
        elif json_body is not None:
            raw = json.dumps(json_body, separators=(",", ":")).encode()
            ctype = ctype or "application/json"
        elif body is not None:
            raw = body if isinstance(body, bytes) else body.encode()
        hdrs = []
        if not no_default_headers:
            hdrs.append(["Host", u.netloc])
            hdrs.append(["User-Agent", "spec-recorder/1"])
        if ctype:
            hdrs.append(["Content-Type", ctype])
        for k, v in (headers or []):
            hdrs.append([k, v])
        if raw is not None or method in ("POST", "PUT", "PATCH"):
            hdrs.append(["Content-Length", str(len(raw or b""))])
        hdrs.append(["Connection", "close"])
        return endpoint, u.hostname, u.port, target, hdrs, raw

    def req(self, method, path, *, note="", role="main", timeout=10.0, max_lines=None,
            during=None, chunked=None, **kw):
        endpoint, host, port, target, hdrs, raw = self._build(method, path, **kw)
        if chunked is not None:
            hdrs = [h for h in hdrs if h[0].lower() != "content-length"]
            hdrs.insert(-1, ["Transfer-Encoding", "chunked"])
        self.seq += 1
        my_seq = self.seq
        t_start = int((time.monotonic() - self.t_scn) * 1000)
        threads = []
        bg_results = []
        if during:
            for i, d in enumerate(during):
                d = dict(d)
                delay = d.pop("after", 0.5)
                self.seq += 1
                bseq = self.seq

                def run(d=d, delay=delay, bseq=bseq):
                    time.sleep(delay)
                    bg_results.append(self._do(d.pop("method"), d.pop("path"), role="background",
                                               seq=bseq, emit=False, **d))
                th = threading.Thread(target=run, daemon=True)
                threads.append(th)
                th.start()
        split = urllib.parse.urlsplit(target)
        chunked_parts = None
        if chunked is not None:
            chunked_parts = [(dl, (p if (p is None or isinstance(p, bytes)) else
                                   json.dumps(p, separators=(",", ":")).encode()))
                             for dl, p in chunked]
        res = http_exchange(host, port, method, target, hdrs, raw, timeout=timeout,
                            max_lines=max_lines, chunked_parts=chunked_parts)
        rec = self._record(endpoint, method, target, split, hdrs, raw, res, note, role, my_seq, t_start,
                           chunked_parts)
        for th in threads:
            th.join(timeout=30)
        self._emit(rec)
        for r in sorted(bg_results, key=lambda r: r["seq"]):
            self._emit(r)
        return rec

    def _do(self, method, path, *, role, seq, emit=True, note="", timeout=10.0, max_lines=None, **kw):
        endpoint, host, port, target, hdrs, raw = self._build(method, path, **kw)
        t_start = int((time.monotonic() - self.t_scn) * 1000)
        res = http_exchange(host, port, method, target, hdrs, raw, timeout=timeout, max_lines=max_lines)
        rec = self._record(endpoint, method, target, urllib.parse.urlsplit(target), hdrs, raw, res,
                           note, role, seq, t_start, None)
        if emit:
            self._emit(rec)
        return rec

    def _record(self, endpoint, method, target, split, hdrs, raw, res, note, role, seq, t_start, chunked_parts):
        body_text = raw.decode("utf-8", "replace") if raw is not None else None
        request = {"endpoint": endpoint, "method": method, "target": target, "path": split.path,
                   "query": split.query, "headers": hdrs, "body": _cap(body_text),
                   "body_len": len(raw) if raw is not None else 0}
        if chunked_parts is not None:
            request["chunked_parts"] = [{"after_s": dl, "data": (p.decode() if p is not None else None)}
                                        for dl, p in chunked_parts]
        if res.error and res.status is None:
            response = {"error": res.error, "elapsed_ms": res.elapsed_ms, "cut_reason": res.cut_reason}
        else:
            text = res.body.decode("utf-8", "replace")
            lines = None
            if res.chunks is not None:
                lines = [(_try_json(x) if len(x) <= BODY_CAP else f"[line of {len(x)} chars omitted]")
                         for x in text.split("\n") if x.strip()]
            response = {"status": res.status, "reason": res.reason, "headers": res.headers,
                        "body": _cap(text), "json": _try_json(text) if len(text) < BODY_CAP else None,
                        "chunks": None if res.chunks is None else [_cap(c.decode("utf-8", "replace")) for c in res.chunks],
                        "lines": lines, "trailers": res.trailers, "complete": res.complete,
                        "cut_reason": res.cut_reason, "elapsed_ms": res.elapsed_ms, "body_len": len(res.body)}
            if res.error:
                response["error"] = res.error
        return {"suite": self.suite, "scenario": self.scenario, "seq": seq, "role": role,
                "t_ms": t_start, "request": request, "response": response, "note": note}

    # -- conveniences
    def v2(self, method, key, **kw):
        return self.req(method, "/v2/keys" + key, **kw)

    def v3(self, path, obj=None, **kw):
        if obj is None:
            obj = {}
        return self.req("POST", path, json_body=obj, **kw)

    def bulk(self, desc, fn):
        """Run unrecorded setup traffic, record one summary line."""
        self.seq += 1
        t0 = time.monotonic()
        info = fn()
        self._emit({"suite": self.suite, "scenario": self.scenario, "seq": self.seq, "role": "bulk",
                    "note": desc, "info": info, "elapsed_ms": int((time.monotonic() - t0) * 1000)})


def jget(rec, *path, default=None):
    """Dig into rec['response']['json']."""
    cur = rec.get("response", {}).get("json")
    for p in path:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            return default
    return cur


# ---------------------------------------------------------------- scenarios

SUITES = {"v2": [], "v3": [], "cluster": [], "cors": []}


def scenario(suite, name, description):
    def deco(fn):
        SUITES[suite].append((name, description, fn))
        return fn
    return deco


FORM = "application/x-www-form-urlencoded"

# ============================ v2 suite ======================================


@scenario("v2", "v2.meta.version", "GET /version; POST /version is 405 with Allow: GET")
def _(r):
    r.req("GET", "/version")
    r.req("POST", "/version", body="")
    r.req("HEAD", "/version", note="HEAD is not GET for /version")


@scenario("v2", "v2.meta.health", "GET /health (QGET through raft); POST is 405")
def _(r):
    r.req("GET", "/health")
    r.req("GET", "/health", query="exclude=NOSPACE")
    r.req("POST", "/health", body="")


@scenario("v2", "v2.meta.machines", "/v2/machines lists client URLs as plain text")
def _(r):
    r.req("GET", "/v2/machines")
    r.req("HEAD", "/v2/machines")
    r.req("PUT", "/v2/machines", body="")
    r.req("GET", "/v2/machines/", note="only the exact path is registered")


@scenario("v2", "v2.meta.members", "GET /v2/members, /v2/members/, /v2/members/leader, unknown sub path")
def _(r):
    r.req("GET", "/v2/members")
    r.req("GET", "/v2/members/")
    r.req("GET", "/v2/members/leader")
    r.req("GET", "/v2/members/abc")
    r.req("HEAD", "/v2/members", note="HEAD passes allowMethod? (GET,POST,DELETE,PUT only)")
    r.req("PATCH", "/v2/members")
    r.req("DELETE", "/v2/members", note="DELETE without id")
    r.req("DELETE", "/v2/members/zzzz", note="DELETE with unparsable id")
    r.req("DELETE", "/v2/members/1234", note="DELETE with unknown id")
    r.req("POST", "/v2/members", json_body={"peerURLs": ["http://127.0.0.1:42399"]}, content_type="text/plain",
          note="wrong content type -> 415")
    r.req("POST", "/v2/members", body="{not json", content_type="application/json")
    r.req("POST", "/v2/members", json_body={"peerURLs": ["not a url"]})
    r.req("PUT", "/v2/members/1234", json_body={"peerURLs": ["http://127.0.0.1:42398"]})


@scenario("v2", "v2.meta.stats", "/v2/stats/self, /v2/stats/leader, /v2/stats/store and their 405/404 answers")
def _(r):
    r.req("GET", "/v2/stats/self")
    r.req("GET", "/v2/stats/leader")
    r.req("GET", "/v2/stats/store")
    r.req("PUT", "/v2/stats/store", body="")
    r.req("HEAD", "/v2/stats/self")
    r.req("GET", "/v2/stats")
    r.req("GET", "/v2/stats/")


@scenario("v2", "v2.meta.notfound", "Unregistered paths: plain-text 404 from Go's mux")
def _(r):
    r.req("GET", "/")
    r.req("GET", "/v2")
    r.req("GET", "/v2/")
    r.req("GET", "/v2/nothing")
    r.req("GET", "/v2/keysx")
    r.req("GET", "/v3alpha/kv/range")
    r.req("GET", "/config/local/log", note="3.4 still has this handler (PUT only)")


@scenario("v2", "v2.meta.cors", "CORS: headers on every answer with --cors '*'; OPTIONS short-circuits with 200")
def _(r):
    r.req("OPTIONS", "/v2/keys/anything", headers=[["Origin", "http://dash.example"],
                                                 ["Access-Control-Request-Method", "PUT"],
                                                 ["Access-Control-Request-Headers", "content-type"]])
    r.req("OPTIONS", "/no/such/path")
    r.req("OPTIONS", "/v3/kv/range", headers=[["Origin", "http://dash.example"]])
    r.req("GET", "/v2/keys/", headers=[["Origin", "http://dash.example"]])
    r.req("GET", "/version", headers=[["Origin", "null"]])


@scenario("v2", "v2.keys.root", "GET of the root dir: no key/indices fields; PUT/DELETE/POST on root")
def _(r):
    r.req("GET", "/v2/keys")
    r.req("GET", "/v2/keys/")
    r.req("PUT", "/v2/keys/", form={"value": "x"})
    r.req("DELETE", "/v2/keys/")
    r.req("DELETE", "/v2/keys/", query="recursive=true")
    r.req("PUT", "/v2/keys/", query="dir=true&prevExist=true&ttl=5", note="update root ttl")
    r.req("PUT", "/v2/keys/", query="prevValue=a", form={"value": "b"}, note="CAS on root")
    r.req("DELETE", "/v2/keys/", query="prevValue=a", note="CAD on root: 102 with the cause omitted (root path trims to empty)")
    r.req("POST", "/v2/keys/", form={"value": "top"}, note="in-order key directly under the root")


@scenario("v2", "v2.keys.set_create", "PUT new key -> 201 action set; replace -> 200 with prevNode")
def _(r):
    r.v2("PUT", "/set/a", form={"value": "one"})
    r.v2("PUT", "/set/a", form={"value": "two"})
    r.v2("GET", "/set/a")
    r.v2("PUT", "/set/empty", form={"value": ""}, note="empty value is fine")
    r.v2("PUT", "/set/novalue", form={}, note="no value at all -> empty value")
    r.v2("GET", "/set/empty")


@scenario("v2", "v2.keys.form_vs_query", "value/ttl etc. may come from the query string or the form body; body wins")
def _(r):
    r.v2("PUT", "/fq/a", query="value=fromquery")
    r.v2("PUT", "/fq/b", query="value=fromquery", form={"value": "frombody"})
    r.v2("PUT", "/fq/c", query="value=q", body="value=b", note="no Content-Type: body ignored")
    r.v2("PUT", "/fq/d", body="value=b", content_type="application/json",
         note="JSON content type: body ignored, value empty")
    r.v2("PUT", "/fq/e", body="value=b", content_type="application/x-www-form-urlencoded; charset=utf-8")
    r.v2("PUT", "/fq/f", query="value=1&value=2", note="first value of a repeated param")
    r.v2("POST", "/fq/q", query="value=inorder-q")
    r.v2("DELETE", "/fq/e", body="prevValue=zzz", content_type=FORM,
         note="DELETE bodies are never parsed (Go parses bodies only for POST/PUT/PATCH): plain delete")
    r.v2("PUT", "/fq/m", body='--XX\r\nContent-Disposition: form-data; name="value"\r\n\r\nmp\r\n--XX--\r\n',
         content_type="multipart/form-data; boundary=XX", note="multipart bodies are ignored: value empty")
    r.v2("PATCH", "/fq/a", form={"value": "p"}, note="PATCH is not allowed")


@scenario("v2", "v2.keys.key_names", "Percent-encoded and odd key names; path cleaning and redirects")
def _(r):
    r.v2("PUT", "/names/with%20space", form={"value": "s"})
    r.v2("PUT", "/names/%E2%9C%93", form={"value": "unicode"})
    r.v2("PUT", "/names/a%2Fb", form={"value": "encoded slash"})
    r.v2("GET", "/names", query="sorted=true")
    r.v2("GET", "/names/", query="recursive=true&sorted=true")
    r.req("GET", "/v2/keys//names/with%20space", note="double slash -> 301 by Go mux")
    r.req("GET", "/v2/keys/names/../names/with%20space", note="dot segments -> 301 by Go mux")
    r.req("PUT", "/v2/keys//names/x", query="value=1", note="non-GET redirect: 301 without body, query kept, nothing written")
    r.req("GET", "/v2/keys/names/with%20space/", note="trailing slash is cleaned by the store")
    r.v2("PUT", "/names/dot.key", form={"value": "d"})
    r.v2("PUT", "/names/colon:key", form={"value": "c"})
    r.v2("GET", "/names/colon:key")


@scenario("v2", "v2.keys.get_errors", "GET of missing key (100), through a file (104), value=file get")
def _(r):
    r.v2("PUT", "/ge/file", form={"value": "f"})
    r.v2("GET", "/ge/missing")
    r.v2("GET", "/ge/missing/deeper")
    r.v2("GET", "/ge/file/child")
    r.v2("GET", "/ge/file", query="recursive=true&sorted=true", note="flags are harmless on files")
    r.v2("PUT", "/ge/file/child", form={"value": "x"}, note="set through a file -> 104")


@scenario("v2", "v2.keys.create_prevexist", "prevExist=false create (201, action create) and 105 when present")
def _(r):
    r.v2("PUT", "/cr/a", query="prevExist=false", form={"value": "1"})
    r.v2("PUT", "/cr/a", query="prevExist=false", form={"value": "2"})
    r.v2("PUT", "/cr/d", query="prevExist=false&dir=true")
    r.v2("PUT", "/cr/d", query="prevExist=false&dir=true")
    r.v2("PUT", "/cr/b", query="prevExist=false&prevValue=zzz", form={"value": "1"},
         note="prevExist=false wins over prevValue: plain create")
    r.v2("PUT", "/cr/c", query="prevExist=0", form={"value": "1"}, note="Go ParseBool accepts 0/1/t/f/T/F/true/false/TRUE/...")
    r.v2("PUT", "/cr/e", query="prevExist=no", form={"value": "1"})


@scenario("v2", "v2.keys.update_prevexist", "prevExist=true update (200, action update) and 100 when missing")
def _(r):
    r.v2("PUT", "/up/a", form={"value": "1"})
    r.v2("PUT", "/up/a", query="prevExist=true", form={"value": "2"})
    r.v2("PUT", "/up/missing", query="prevExist=true", form={"value": "2"})
    r.v2("PUT", "/up/a", query="prevExist=true&ttl=100", form={"value": "3"})
    r.v2("PUT", "/up/a", query="prevExist=true", form={"value": "4", "ttl": ""}, note="empty ttl removes the TTL")
    r.v2("PUT", "/up/a", query="prevExist=true", form={"value": "5"}, note="no ttl param also makes it permanent")


@scenario("v2", "v2.keys.cas", "compareAndSwap via prevValue / prevIndex, failures and causes")
def _(r):
    a = r.v2("PUT", "/cas/a", form={"value": "one"})
    idx = jget(a, "node", "modifiedIndex", default=0)
    r.v2("PUT", "/cas/a", query="prevValue=one", form={"value": "two"})
    r.v2("PUT", "/cas/a", query="prevValue=one", form={"value": "three"})
    r.v2("PUT", "/cas/a", query=f"prevIndex={idx}", form={"value": "four"})
    cur = r.v2("GET", "/cas/a")
    cidx = jget(cur, "node", "modifiedIndex", default=0)
    r.v2("PUT", "/cas/a", query=f"prevIndex={cidx}", form={"value": "five"})
    r.v2("PUT", "/cas/a", query=f"prevIndex=1&prevValue=nope", form={"value": "x"})
    r.v2("PUT", "/cas/a", query="prevIndex=0", form={"value": "six"}, note="prevIndex=0 means 'not given' -> plain set")
    r.v2("PUT", "/cas/a", query="prevValue=", form={"value": "x"})
    r.v2("PUT", "/cas/a", query="prevIndex=abc", form={"value": "x"})
    r.v2("PUT", "/cas/a", query="prevIndex=-1", form={"value": "x"})
    r.v2("PUT", "/cas/missing", query="prevValue=one", form={"value": "x"})
    r.v2("PUT", "/cas/dir", query="dir=true")
    r.v2("PUT", "/cas/dir", query="prevValue=one", form={"value": "x"})
    r.v2("PUT", "/cas/a", query="prevExist=true&prevValue=six", form={"value": "seven"},
         note="prevExist=true + prevValue -> compareAndSwap")
    r.v2("PUT", "/cas/a", query="prevValue=seven&ttl=100", form={"value": "eight"})
    r.v2("PUT", "/cas/a", query="prevValue=eight", form={"value": "nine"}, note="CAS without ttl drops the TTL")


@scenario("v2", "v2.keys.cad", "compareAndDelete via prevValue / prevIndex")
def _(r):
    a = r.v2("PUT", "/cad/a", form={"value": "one"})
    idx = jget(a, "node", "modifiedIndex", default=0)
    r.v2("DELETE", "/cad/a", query="prevValue=two")
    r.v2("DELETE", "/cad/a", query="prevIndex=1")
    r.v2("DELETE", "/cad/a", query="prevValue=two&prevIndex=1")
    r.v2("DELETE", "/cad/a", query="prevValue=one")
    b = r.v2("PUT", "/cad/b", form={"value": "one"})
    bidx = jget(b, "node", "modifiedIndex", default=0)
    r.v2("DELETE", "/cad/b", query=f"prevIndex={bidx}")
    r.v2("DELETE", "/cad/missing", query="prevValue=x")
    r.v2("PUT", "/cad/d", query="dir=true")
    r.v2("DELETE", "/cad/d", query="prevValue=x")
    r.v2("DELETE", "/cad/d", query="prevIndex=1&recursive=true")
    r.v2("DELETE", "/cad/a", query="prevValue=")


@scenario("v2", "v2.keys.delete", "DELETE of keys and dirs: dir/recursive flags, 102/108/100 errors")
def _(r):
    r.v2("PUT", "/del/k", form={"value": "v"})
    r.v2("DELETE", "/del/k")
    r.v2("DELETE", "/del/k")
    r.v2("PUT", "/del/d/x", form={"value": "v"})
    r.v2("DELETE", "/del/d")
    r.v2("DELETE", "/del/d", query="dir=true")
    r.v2("DELETE", "/del/d", query="recursive=true")
    r.v2("PUT", "/del/e", query="dir=true")
    r.v2("DELETE", "/del/e", query="dir=true")
    r.v2("PUT", "/del/f", form={"value": "file"})
    r.v2("DELETE", "/del/f", query="dir=true", note="dir=true on a file still deletes it")
    r.v2("DELETE", "/del/noval", form={"value": "ignored"})
    r.v2("PUT", "/del/g", form={"value": "v"})
    r.v2("DELETE", "/del/g", query="prevExist=false", note="prevExist is ignored by DELETE")


@scenario("v2", "v2.keys.dirs", "dir=true create, PUT over dir, dir over file, value on dir, listing")
def _(r):
    r.v2("PUT", "/dirs/d", query="dir=true")
    r.v2("PUT", "/dirs/d", query="dir=true", note="set on existing dir -> 102")
    r.v2("PUT", "/dirs/d", form={"value": "v"}, note="value over dir -> 102")
    r.v2("PUT", "/dirs/d2", query="dir=true", form={"value": "ignored"}, note="value is ignored when dir=true")
    r.v2("PUT", "/dirs/f", form={"value": "file"})
    r.v2("PUT", "/dirs/f", query="dir=true", note="dir=true over an existing FILE replaces it (200)")
    r.v2("PUT", "/dirs/d/x", form={"value": "1"})
    r.v2("PUT", "/dirs/d/sub/y", form={"value": "2"})
    r.v2("GET", "/dirs/d", note="one level, sub dir listed without children")
    r.v2("GET", "/dirs/d", query="recursive=true&sorted=true")
    r.v2("GET", "/dirs/d", query="sorted=true")
    r.v2("PUT", "/dirs/d", query="prevExist=true", form={"value": "v"}, note="update dir with a value -> 102")
    r.v2("PUT", "/dirs/d", query="prevExist=true", note="update dir without value: ok (ttl only)")
    r.v2("GET", "/dirs/d", note="modifiedIndex of a dir is NOT bumped by update")
    r.v2("POST", "/dirs/d", query="dir=true", note="in-order dir")
    r.v2("PUT", "/dirs/file2", form={"value": "orig"})
    r.v2("PUT", "/dirs/file2", query="dir=true&prevExist=true",
         note="update ignores dir=true: the FILE's value becomes empty")


@scenario("v2", "v2.keys.implicit_dirs", "Intermediate dirs are created with the new node's index")
def _(r):
    r.v2("PUT", "/imp/a/b/c", form={"value": "deep"})
    r.v2("GET", "/imp", query="recursive=true")
    r.v2("GET", "/imp/a")


@scenario("v2", "v2.keys.hidden", "Keys/dirs whose last segment starts with _ are hidden from listings")
def _(r):
    r.v2("PUT", "/hid/_h", form={"value": "secret"})
    r.v2("PUT", "/hid/v", form={"value": "visible"})
    r.v2("PUT", "/hid/_hdir/x", form={"value": "in hidden dir"})
    r.v2("GET", "/hid", query="recursive=true&sorted=true")
    r.v2("GET", "/hid/_h")
    r.v2("GET", "/hid/_hdir", query="recursive=true", note="listing a hidden dir directly shows its children")
    r.v2("POST", "/_hq", form={"value": "x"})


@scenario("v2", "v2.keys.sorted_recursive", "sorted=true orders by key at every level; unsorted order is unspecified")
def _(r):
    for k in ["c", "a", "b", "a/z", "a/y"]:
        if k == "a":
            r.v2("PUT", "/srt/a", query="dir=true")
        else:
            r.v2("PUT", "/srt/" + k, form={"value": k})
    r.v2("GET", "/srt", query="recursive=true&sorted=true")
    r.v2("GET", "/srt", query="sorted=true")
    r.v2("GET", "/srt", query="recursive=true", note="order is Go map order (random)")
    r.v2("GET", "/srt", query="recursive=1&sorted=T", note="ParseBool forms")
    r.v2("GET", "/srt", query="recursive=yes")
    r.v2("GET", "/srt", query="sorted=maybe")


@scenario("v2", "v2.keys.inorder", "POST creates in-order keys named by 20-digit zero padded index")
def _(r):
    r.v2("POST", "/queue", form={"value": "job1"})
    r.v2("POST", "/queue", form={"value": "job2"})
    r.v2("POST", "/queue", query="ttl=100", form={"value": "job3"})
    r.v2("GET", "/queue", query="sorted=true")
    r.v2("GET", "/queue", query="sorted=true&recursive=true")
    r.v2("PUT", "/qfile", form={"value": "x"})
    r.v2("POST", "/qfile", form={"value": "y"}, note="POST under a file -> 104")
    r.v2("POST", "/queue", query="prevExist=true", form={"value": "p"}, note="prevExist ignored for POST")


@scenario("v2", "v2.keys.ttl", "TTL set, ttl countdown, expiry (expire event), ttl validation")
def _(r):
    r.v2("PUT", "/ttl/a", query="ttl=2", form={"value": "v"})
    r.v2("GET", "/ttl/a")
    r.sleep(1.2, "ttl counts down; ttl is ceil(remaining seconds)")
    r.v2("GET", "/ttl/a")
    r.sleep(2.3, "past expiry + up to 500ms sync tick")
    r.v2("GET", "/ttl/a")
    r.v2("PUT", "/ttl/b", query="ttl=abc", form={"value": "v"})
    r.v2("PUT", "/ttl/b", query="ttl=-1", form={"value": "v"})
    r.v2("PUT", "/ttl/b", query="ttl=1.5", form={"value": "v"})
    r.v2("PUT", "/ttl/b", query="ttl=", form={"value": "v"}, note="empty ttl = no ttl")
    r.v2("PUT", "/ttl/c", query="ttl=0", form={"value": "v"}, note="ttl=0 expires immediately (next sync)")
    r.v2("GET", "/ttl/c")
    r.sleep(1.0)
    r.v2("GET", "/ttl/c")
    r.v2("PUT", "/ttl/d", query="ttl=1000", form={"value": "v"})
    r.v2("PUT", "/ttl/d", form={"value": "v2"}, note="plain set without ttl replaces node: permanent")
    r.v2("PUT", "/ttl/big", query="ttl=99999999999", form={"value": "v"})
    r.v2("DELETE", "/ttl/big")


@scenario("v2", "v2.keys.ttl_dir", "Dir with TTL expires with its children; dir TTL update and removal")
def _(r):
    r.v2("PUT", "/ttld/d", query="dir=true&ttl=2")
    r.v2("PUT", "/ttld/d/k", form={"value": "child"})
    r.v2("GET", "/ttld/d", query="recursive=true")
    r.v2("PUT", "/ttld/d", query="dir=true&prevExist=true&ttl=1")
    r.sleep(2.0)
    r.v2("GET", "/ttld/d/k")
    r.v2("PUT", "/ttld/e", query="dir=true&ttl=100")
    r.v2("PUT", "/ttld/e", query="dir=true&prevExist=true", form={"ttl": ""}, note="removes dir ttl")


@scenario("v2", "v2.keys.refresh", "refresh=true: TTL reset without value change; no watch notification")
def _(r):
    r.v2("PUT", "/ref/a", query="ttl=30", form={"value": "keep"})
    r.v2("PUT", "/ref/a", query="ttl=60&refresh=true", note="set+refresh: new created/modified index, same value")
    r.v2("PUT", "/ref/a", query="ttl=60&refresh=true&prevExist=true", note="update+refresh keeps createdIndex")
    r.v2("PUT", "/ref/a", query="ttl=60&refresh=true&prevValue=keep", note="CAS+refresh")
    r.v2("PUT", "/ref/a", query="ttl=60&refresh=true", form={"value": "new"})
    r.v2("PUT", "/ref/a", query="refresh=true")
    r.v2("PUT", "/ref/a", query="refresh=maybe&ttl=5")
    r.v2("PUT", "/ref/a", query="refresh=false&ttl=5", form={"value": "normal"}, note="refresh=false: normal set")
    r.v2("PUT", "/ref/missing", query="ttl=60&refresh=true")
    r.v2("PUT", "/ref/a", query="ttl=60&refresh=true", form={"value": ""}, note="empty value is allowed on refresh")
    r.v2("GET", "/ref/a", query="wait=true", timeout=2.5,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/ref/a", "query": "ttl=60&refresh=true"}],
         note="watcher is NOT woken by a refresh; cut by deadline")
    r.v2("PUT", "/ref/d", query="dir=true&ttl=30")
    r.v2("PUT", "/ref/d", query="dir=true&ttl=60&refresh=true", note="set+refresh on a dir -> 102")
    r.v2("PUT", "/ref/d", query="dir=true&ttl=60&refresh=true&prevExist=true", note="update+refresh on a dir ok")


@scenario("v2", "v2.keys.novalue", "noValueOnSuccess=true strips node/prevNode from set/create/update/CAS answers")
def _(r):
    r.v2("PUT", "/nv/a", query="noValueOnSuccess=true", form={"value": "1"})
    r.v2("PUT", "/nv/a", query="noValueOnSuccess=true&prevValue=1", form={"value": "2"})
    r.v2("PUT", "/nv/a", query="noValueOnSuccess=true&prevExist=true", form={"value": "3"})
    r.v2("POST", "/nv/q", query="noValueOnSuccess=true", form={"value": "1"})
    r.v2("DELETE", "/nv/a", query="noValueOnSuccess=true", note="not stripped for delete")
    r.v2("PUT", "/nv/b", query="noValueOnSuccess=maybe", form={"value": "1"})
    r.v2("GET", "/nv", query="noValueOnSuccess=true&recursive=true", note="not stripped for get")


@scenario("v2", "v2.keys.quorum", "quorum=true GET goes through raft (raft index grows); also a 404 through raft")
def _(r):
    r.v2("PUT", "/quo/a", form={"value": "1"})
    r.v2("GET", "/quo/a", query="quorum=true")
    r.v2("GET", "/quo/a", query="quorum=true")
    r.v2("GET", "/quo/missing", query="quorum=true")
    r.v2("GET", "/quo/a", query="quorum=true&wait=true", note="quorum wins over wait: immediate get")
    r.v2("GET", "/quo/a", query="quorum=nope")


@scenario("v2", "v2.keys.head", "HEAD: same headers as GET, no body; errors keep status")
def _(r):
    r.v2("PUT", "/head/a", form={"value": "1"})
    r.v2("HEAD", "/head/a")
    r.v2("HEAD", "/head/missing")
    r.v2("HEAD", "/head/a", query="wait=true", note="HEAD ignores wait")


@scenario("v2", "v2.keys.methods", "Method not allowed on /v2/keys")
def _(r):
    r.v2("PATCH", "/meth/a", body="")
    r.v2("OPTIONS", "/meth/a", note="OPTIONS is answered by the CORS layer before the keys handler")
    r.req("TRACE", "/v2/keys/meth/a")


@scenario("v2", "v2.keys.bad_form", "Malformed form/query -> 210; oversized form -> 210")
def _(r):
    r.v2("PUT", "/bf/a", body="value=%zz", content_type=FORM)
    r.v2("PUT", "/bf/a", query="value=%zz")
    r.req("PUT", "/v2/keys/bf/a%zz", form={"value": "x"}, note="bad escape in path: Go server 400")
    r.v2("PUT", "/bf/big", form={"value": "x" * (11 * 1024 * 1024)}, note="form > 10 MiB")
    r.v2("PUT", "/bf/twomb", form={"value": "y" * (2 * 1024 * 1024)}, note="2 MiB value is accepted by v2")
    r.v2("DELETE", "/bf/twomb")


@scenario("v2", "v2.keys.large_response", "Bodies up to 2048 bytes get Content-Length, larger ones are chunked")
def _(r):
    r.v2("PUT", "/large/a", form={"value": "x" * 1900})
    r.v2("GET", "/large/a", note="body 1993 bytes: Content-Length")
    r.v2("PUT", "/large/a", form={"value": "x" * 2000}, note="set with prevNode > 2048 bytes: chunked")
    r.v2("GET", "/large/a", note="body just over 2048: chunked")
    r.v2("DELETE", "/large", query="recursive=true")


@scenario("v2", "v2.keys.index_headers", "X-Etcd-Index vs X-Raft-Index: v3 writes move raft index only")
def _(r):
    r.v2("PUT", "/idx/a", form={"value": "1"})
    r.v2("GET", "/idx/a")
    r.v3("/v3/kv/put", {"key": b64("idx-v3"), "value": b64("x")})
    r.v2("GET", "/idx/a")
    r.v2("GET", "/idx/missing")
    r.v2("PUT", "/idx/a", query="prevValue=nope", form={"value": "2"}, note="failed CAS: index in body/header")


@scenario("v2", "v2.watch.longpoll", "wait=true blocks until the next change of that key")
def _(r):
    r.v2("PUT", "/wlp/a", form={"value": "0"})
    r.v2("GET", "/wlp/a", query="wait=true", timeout=5,
         during=[{"after": 0.7, "method": "PUT", "path": "/v2/keys/wlp/a", "form": {"value": "1"}}])
    r.v2("GET", "/wlp/a", query="wait=true", timeout=5,
         during=[{"after": 0.7, "method": "DELETE", "path": "/v2/keys/wlp/a"}])
    r.v2("GET", "/wlp/new", query="wait=true", timeout=5,
         during=[{"after": 0.7, "method": "PUT", "path": "/v2/keys/wlp/new", "query": "prevExist=false",
                  "form": {"value": "c"}}], note="watch on a key that does not exist yet")
    r.v2("GET", "/wlp/x", query="wait=true", timeout=1.5, note="no event: headers only, cut at deadline")


@scenario("v2", "v2.watch.waitindex", "waitIndex: served from the 1000-event history or waits for the future")
def _(r):
    a = r.v2("PUT", "/wwi/a", form={"value": "1"})
    i1 = jget(a, "node", "modifiedIndex", default=0)
    r.v2("PUT", "/wwi/a", form={"value": "2"})
    r.v2("PUT", "/wwi/a", form={"value": "3"})
    r.v2("GET", "/wwi/a", query=f"wait=true&waitIndex={i1}", timeout=5)
    r.v2("GET", "/wwi/a", query=f"wait=true&waitIndex={i1 + 1}", timeout=5)
    r.v2("GET", "/wwi/a", query=f"wait=true&waitIndex={i1 + 100}", timeout=2,
         note="future index: blocks (cut)")
    cur = r.v2("GET", "/wwi/a")
    ci = int(dict((k.lower(), v) for k, v in cur["response"]["headers"]).get("x-etcd-index", "0"))
    r.v2("GET", "/wwi/a", query=f"wait=true&waitIndex={ci + 2}", timeout=6,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/wwi/a", "form": {"value": "skip"}},
                 {"after": 1.0, "method": "PUT", "path": "/v2/keys/wwi/a", "form": {"value": "hit"}}],
         note="first write (index ci+1) is below waitIndex and skipped; second is delivered")
    r.v2("GET", "/wwi/a", query="wait=true&waitIndex=0", timeout=3,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/wwi/a", "form": {"value": "zero"}}],
         note="waitIndex=0 is the same as no waitIndex")
    r.v2("GET", "/wwi/a", query="wait=true&waitIndex=abc")
    r.v2("GET", "/wwi/a", query="wait=true&waitIndex=-5")
    r.v2("POST", "/wwi/a", query="wait=true")
    r.v2("PUT", "/wwi/a", query="wait=true", form={"value": "x"})
    r.v2("GET", "/wwi/a", query="wait=maybe")


@scenario("v2", "v2.watch.recursive", "recursive watch on a dir sees child changes; history scan by prefix")
def _(r):
    r.v2("PUT", "/wrc/d", query="dir=true")
    r.v2("GET", "/wrc/d", query="wait=true&recursive=true", timeout=5,
         during=[{"after": 0.7, "method": "PUT", "path": "/v2/keys/wrc/d/x/y", "form": {"value": "1"}}])
    r.v2("GET", "/wrc/d", query="wait=true", timeout=2,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/wrc/d/z", "form": {"value": "1"}}],
         note="NON-recursive watch on a dir ignores child changes (cut)")
    d = r.v2("GET", "/wrc/d")
    ci = jget(d, "node", "createdIndex", default=1)
    r.v2("GET", "/wrc/d", query=f"wait=true&recursive=true&waitIndex={ci}", note="history scan: first event at/after index under the prefix")
    r.v2("GET", "/wrc/d", query=f"wait=true&waitIndex={ci + 1}", timeout=2,
         note="non-recursive history scan: only events whose key is exactly /wrc/d (none) -> waits (cut)")
    r.v2("GET", "/wrc", query=f"wait=true&recursive=true&waitIndex={ci}", note="prefix match uses key + '/'")
    r.v2("PUT", "/wrcx", form={"value": "sibling with common string prefix"})
    r.v2("GET", "/wrc", query="wait=true&recursive=true", timeout=2,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/wrcx", "form": {"value": "again"}}],
         note="/wrcx is not under /wrc (cut)")


@scenario("v2", "v2.watch.dir_removed", "Watchers on a key are woken when an ancestor dir is deleted or expires")
def _(r):
    r.v2("PUT", "/wdr/d/k", form={"value": "v"})
    r.v2("GET", "/wdr/d/k", query="wait=true", timeout=5,
         during=[{"after": 0.7, "method": "DELETE", "path": "/v2/keys/wdr/d", "query": "recursive=true"}],
         note="event is the dir's delete event (key /wdr/d)")
    r.v2("PUT", "/wdr/e", query="dir=true&ttl=2")
    r.v2("PUT", "/wdr/e/k", form={"value": "v"})
    r.v2("GET", "/wdr/e/k", query="wait=true", timeout=6, note="woken by the dir's expire event")
    r.v2("PUT", "/wdr/f/g/h", form={"value": "v"})
    fi = r.v2("GET", "/wdr/f")
    ci = jget(fi, "node", "createdIndex", default=1)
    r.v2("DELETE", "/wdr/f", query="recursive=true")
    r.v2("GET", "/wdr/f/g/h", query=f"wait=true&waitIndex={ci + 1}", timeout=3,
         note="history scan matches a dir delete whose key is a prefix of the watched key")
    r.v2("GET", "/wdr/f/nonexistent", query=f"wait=true&waitIndex={ci + 1}", timeout=3,
         note="the prefix rule is a plain string prefix test on the watched key")


@scenario("v2", "v2.watch.hidden", "Hidden keys do not wake recursive watchers of parents; direct watch works")
def _(r):
    r.v2("PUT", "/whd/d", query="dir=true")
    r.v2("GET", "/whd/d", query="wait=true&recursive=true", timeout=2,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/whd/d/_h", "form": {"value": "1"}}],
         note="cut: hidden change not delivered")
    r.v2("GET", "/whd/d/_h", query="wait=true", timeout=5,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/whd/d/_h", "form": {"value": "2"}}])
    r.v2("GET", "/whd/d/_h2", query="wait=true&recursive=true", timeout=5,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/whd/d/_h2/x", "form": {"value": "3"}}],
         note="watching inside a hidden dir works")
    d = r.v2("GET", "/whd/d/_h")
    i = jget(d, "node", "modifiedIndex", default=1)
    r.v2("GET", "/whd/d", query=f"wait=true&recursive=true&waitIndex={i - 1}", timeout=2,
         note="history scan does NOT apply the hidden rule")


@scenario("v2", "v2.watch.stream", "stream=true: chunked stream, one JSON event per line/chunk")
def _(r):
    r.v2("PUT", "/wst/d", query="dir=true")
    r.v2("GET", "/wst/d", query="wait=true&recursive=true&stream=true", timeout=4, max_lines=4,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/wst/d/a", "form": {"value": "1"}},
                 {"after": 0.9, "method": "PUT", "path": "/v2/keys/wst/d/b", "form": {"value": "2"}},
                 {"after": 1.3, "method": "DELETE", "path": "/v2/keys/wst/d/a"},
                 {"after": 1.7, "method": "PUT", "path": "/v2/keys/wst/d/b", "query": "ttl=30&refresh=true"},
                 {"after": 2.1, "method": "PUT", "path": "/v2/keys/wst/d/c", "form": {"value": "3"}}],
         note="refresh in the middle produces no line")
    s = r.v2("GET", "/wst/d")
    ci = jget(s, "node", "createdIndex", default=1)
    r.v2("GET", "/wst/d", query=f"wait=true&recursive=true&stream=true&waitIndex={ci}", timeout=2, max_lines=10,
         note="stream + waitIndex in history: ONLY the first matching history event, then live events")
    r.v2("GET", "/wst/d", query="stream=true", note="stream without wait: ordinary get")


@scenario("v2", "v2.watch.stream_duplicates", "Stream watchers on a deleted/expired key or dir receive the event TWICE")
def _(r):
    r.v2("PUT", "/wsd/k", form={"value": "1"})
    r.v2("GET", "/wsd/k", query="wait=true&stream=true", timeout=2.5, max_lines=3,
         during=[{"after": 0.5, "method": "DELETE", "path": "/v2/keys/wsd/k"},
                 {"after": 0.9, "method": "PUT", "path": "/v2/keys/wsd/k", "form": {"value": "2"}}],
         note="delete of the watched key: two identical lines, then the set")
    r.v2("PUT", "/wsd/d/a/b", form={"value": "1"})
    r.v2("GET", "/wsd/d/a", query="wait=true&stream=true&recursive=true", timeout=2, max_lines=3,
         during=[{"after": 0.5, "method": "DELETE", "path": "/v2/keys/wsd/d/a", "query": "recursive=true"}],
         note="delete of the watched dir itself: duplicated")
    r.v2("PUT", "/wsd/d/a/b", form={"value": "1"})
    r.v2("GET", "/wsd/d", query="wait=true&stream=true&recursive=true", timeout=2, max_lines=3,
         during=[{"after": 0.5, "method": "DELETE", "path": "/v2/keys/wsd/d/a", "query": "recursive=true"}],
         note="delete of a child dir seen from the parent: once")
    r.v2("PUT", "/wsd/t", query="ttl=1", form={"value": "1"})
    r.v2("GET", "/wsd/t", query="wait=true&stream=true", timeout=4, max_lines=2,
         note="expiry of the watched key: duplicated too")


@scenario("v2", "v2.watch.expire_event", "TTL expiry produces an expire event with prevNode")
def _(r):
    r.v2("PUT", "/wex/a", query="ttl=1", form={"value": "v"})
    r.v2("GET", "/wex/a", query="wait=true", timeout=5)
    r.v2("GET", "/wex/a")


@scenario("v2", "v2.watch.refresh_history", "History scan skips refresh events")
def _(r):
    a = r.v2("PUT", "/wrh/a", query="ttl=100", form={"value": "v"})
    i = jget(a, "node", "modifiedIndex", default=1)
    r.v2("PUT", "/wrh/a", query="ttl=100&refresh=true")
    r.v2("GET", "/wrh/a", query=f"wait=true&waitIndex={i + 1}", timeout=2, note="refresh event exists at i+1 but is skipped (cut)")
    r.v2("DELETE", "/wrh/a")


# the 1000-event window must run last: it pushes all earlier events out of history.
@scenario("v2", "v2.watch.cleared_401", "After >1000 store events, old waitIndex -> 401 with [start/requested]")
def _(r):
    first = r.v2("PUT", "/wcl/first", form={"value": "0"})
    fi = jget(first, "node", "modifiedIndex", default=1)

    def writes():
        u = urllib.parse.urlsplit(r.endpoints[0])
        import http.client
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        n = 0
        for i in range(1100):
            c.request("PUT", f"/v2/keys/wcl/k{i % 10}", body=f"value={i}",
                      headers={"Content-Type": FORM})
            resp = c.getresponse()
            resp.read()
            n += 1
        c.close()
        return {"writes": n, "keys": "/wcl/k0../wcl/k9"}
    r.bulk("1100 PUTs to /wcl/k0..k9 over one keep-alive connection (not recorded individually)", writes)
    cur = r.v2("GET", "/wcl/k0")
    idx = int(dict((k.lower(), v) for k, v in cur["response"]["headers"]).get("x-etcd-index", "0"))
    r.v2("GET", "/wcl/first", query=f"wait=true&waitIndex={fi}")
    r.v2("GET", "/wcl/k1", query="wait=true&waitIndex=1&recursive=true")
    r.v2("GET", "/wcl", query=f"wait=true&recursive=true&waitIndex={idx - 999}", note="oldest index still in the window")
    r.v2("GET", "/wcl", query=f"wait=true&recursive=true&waitIndex={idx - 1000}", note="one before the window")


@scenario("v2", "v2.auth.setup", "v2 auth admin API before enabling: users, roles, grants, validation errors")
def _(r):
    A = "/v2/auth"
    r.req("GET", A + "/enable")
    r.req("GET", A + "/users")
    r.req("GET", A + "/roles")
    r.req("PUT", A + "/enable", body="", note="no root user yet -> 409")
    r.req("PUT", A + "/users/root", json_body={"user": "root", "password": "rootpw"})
    r.req("PUT", A + "/users/root", json_body={"user": "root", "password": "rootpw"},
          note="existing user + password only -> update (200); the new bcrypt hash differs so it is 'changed'")
    r.req("PUT", A + "/users/bob", json_body={"user": "bob"}, note="empty password -> 400")
    r.req("PUT", A + "/users/bob", json_body={"user": "alice", "password": "x"}, note="name mismatch -> 400")
    r.req("PUT", A + "/users/bob", body="{bad json")
    r.req("PUT", A + "/users/bob", json_body={"user": "bob", "password": "bobpw"})
    r.req("PUT", A + "/roles/rw", json_body={"role": "rw", "permissions": {"kv": {"read": ["/app/*"], "write": ["/app/*"]}}})
    r.req("PUT", A + "/roles/rw", json_body={"role": "rw", "permissions": {"kv": {"read": ["/app/*"], "write": []}}},
          note="create again -> 409")
    r.req("PUT", A + "/roles/ro", json_body={"role": "ro", "permissions": {"kv": {"read": ["/ro/*", "/exact"], "write": []}}})
    r.req("PUT", A + "/roles/ro", json_body={"role": "ro", "grant": {"kv": {"read": ["/more/*"], "write": []}}})
    r.req("PUT", A + "/roles/ro", json_body={"role": "ro", "revoke": {"kv": {"read": ["/nothere"], "write": []}}},
          note="revoking an ungranted permission is only logged; result unchanged -> 400 not updated")
    r.req("PUT", A + "/roles/ro", json_body={"role": "ro", "grant": {"kv": {"read": ["/more/*"]}}}, note="duplicate grant -> 409")
    r.req("PUT", A + "/roles/x", json_body={"role": "x", "permissions": {"kv": {"read": ["/a"]}},
                                             "grant": {"kv": {"read": ["/b"]}}}, note="permissions + grant -> 400")
    r.req("PUT", A + "/roles/y", json_body={"role": "z"}, note="name mismatch")
    r.req("PUT", A + "/roles/root", json_body={"role": "root"})
    r.req("GET", A + "/roles/ro")
    r.req("GET", A + "/roles/root")
    r.req("GET", A + "/roles/nosuch")
    r.req("PUT", A + "/users/bob", json_body={"user": "bob", "grant": ["rw"]})
    r.req("PUT", A + "/users/bob", json_body={"user": "bob", "grant": ["rw"]}, note="duplicate grant -> 409")
    r.req("PUT", A + "/users/bob", json_body={"user": "bob", "revoke": ["nosuch"]}, note="revoke ungranted -> 409")
    r.req("PUT", A + "/users/bob", json_body={"user": "bob", "roles": ["ro"], "grant": ["ro"]}, note="roles + grant -> 400")
    r.req("PUT", A + "/users/carol", json_body={"user": "carol", "password": "c", "roles": ["ro"]},
          note="create with roles: answered 200, not 201")
    r.req("PUT", A + "/users/dave", json_body={"user": "dave", "password": "d", "roles": ["nosuch"]},
          note="unknown role names are stored as given")
    r.req("GET", A + "/users")
    r.req("GET", A + "/users/bob")
    r.req("GET", A + "/users/dave", note="a role that does not exist makes GET user fail")
    r.req("GET", A + "/users/nosuch")
    r.req("GET", A + "/roles")
    r.req("GET", A + "/users/bob/extra")
    r.req("PATCH", A + "/users/bob")
    r.req("POST", A + "/users")


@scenario("v2", "v2.auth.enforce", "v2 auth enabled: guest role, basic auth, key permissions, errors")
def _(r):
    A = "/v2/auth"
    ROOT = [["Authorization", "Basic " + b64("root:rootpw")]]
    BOB = [["Authorization", "Basic " + b64("bob:bobpw")]]
    CAROL = [["Authorization", "Basic " + b64("carol:c")]]
    r.req("PUT", A + "/enable", body="")
    r.req("PUT", A + "/enable", body="", headers=ROOT, note="already enabled -> 409")
    r.req("GET", A + "/enable", note="GET enable needs no credentials")
    r.req("GET", A + "/users", note="no credentials -> 401")
    r.req("GET", A + "/users", headers=[["Authorization", "Basic " + b64("root:wrong")]])
    r.req("GET", A + "/users", headers=BOB, note="authenticated but not root")
    r.req("GET", A + "/users", headers=ROOT)
    r.req("GET", A + "/roles/guest", headers=ROOT, note="guest role auto-created at enable time")
    r.v2("PUT", "/app/x", form={"value": "guest write"}, note="guest role has /* read+write")
    r.req("PUT", A + "/roles/guest", json_body={"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}},
          headers=ROOT)
    r.v2("GET", "/app/x", note="guest now has no access -> 401 errorCode 110")
    r.v2("GET", "/app/x", headers=BOB)
    r.v2("PUT", "/app/x", form={"value": "bob"}, headers=BOB)
    r.v2("PUT", "/other", form={"value": "bob"}, headers=BOB)
    r.v2("GET", "/app", query="recursive=true", headers=BOB,
         note="recursive: pattern must end in * and its prefix must prefix the key ('/app/' vs '/app')")
    r.v2("GET", "/app/", query="recursive=true", headers=BOB, note="the key as seen by auth is the raw URL path")
    r.v2("GET", "/exact", headers=CAROL)
    r.v2("GET", "/exact/sub", headers=CAROL, note="exact pattern (no *) only matches the key itself")
    r.v2("PUT", "/ro/x", form={"value": "1"}, headers=CAROL)
    r.v2("GET", "/ro/x", headers=CAROL)
    r.v2("GET", "/app/x", headers=[["Authorization", "Basic " + b64("bob:wrong")]])
    r.v2("GET", "/app/x", headers=[["Authorization", "Bearer abc"]])
    r.v2("GET", "/app/x", headers=ROOT)
    r.v2("GET", "/app/x", query="wait=true", headers=BOB, timeout=3,
         during=[{"after": 0.5, "method": "PUT", "path": "/v2/keys/app/x", "form": {"value": "w"}, "headers": ROOT}])
    r.req("GET", "/v2/members", note="GET members needs no auth")
    r.req("POST", "/v2/members", json_body={"peerURLs": ["http://127.0.0.1:42399"]}, note="member changes need root")
    r.req("GET", "/v2/stats/self", note="stats need no auth")
    r.req("DELETE", A + "/users/root", headers=ROOT, note="cannot delete root while enabled")
    r.req("DELETE", A + "/roles/root", headers=ROOT)
    r.req("DELETE", A + "/users/nosuch", headers=ROOT)
    r.req("DELETE", A + "/enable", headers=BOB)


@scenario("v2", "v2.auth.teardown", "Disable v2 auth and clean up")
def _(r):
    A = "/v2/auth"
    ROOT = [["Authorization", "Basic " + b64("root:rootpw")]]
    r.req("DELETE", A + "/enable", headers=ROOT)
    r.req("DELETE", A + "/enable", headers=ROOT, note="already disabled -> 409")
    r.req("DELETE", A + "/users/carol")
    r.req("DELETE", A + "/users/dave")
    r.req("DELETE", A + "/roles/ro")
    r.req("DELETE", A + "/roles/ro")
    r.req("DELETE", A + "/roles/guest")
    r.req("GET", A + "/enable")
    r.req("GET", A + "/roles")
    r.v2("GET", "/app/x", note="auth data lives outside the user key space (/2/...)")
    r.v2("GET", "/2", note="internal prefixes are not reachable through /v2/keys")


# ============================ v3 suite ======================================

def kv(k, v=None, **extra):
    o = {"key": b64(k)}
    if v is not None:
        o["value"] = b64(v)
    o.update(extra)
    return o


@scenario("v3", "v3.kv.put", "Put: header only; prev_kv; empty value; missing key")
def _(r):
    r.v3("/v3/kv/put", kv("p/a", "1"))
    r.v3("/v3/kv/put", kv("p/a", "2", prev_kv=True))
    r.v3("/v3/kv/put", kv("p/new", "1", prev_kv=True), note="prev_kv on a new key: field absent")
    r.v3("/v3/kv/put", kv("p/empty", ""), note="empty value")
    r.v3("/v3/kv/put", {"key": b64("p/novalue")}, note="no value field")
    r.v3("/v3/kv/put", {"value": b64("x")}, note="no key -> 400 code 3")
    r.v3("/v3/kv/put", {"key": "", "value": b64("x")})
    r.v3("/v3/kv/put", kv("p/bin", "\x00\xff\xfe"), note="binary value")
    r.v3("/v3/kv/range", kv("p/", range_end=b64("p0")), note="empty values have no value field")


@scenario("v3", "v3.kv.put_ignore", "ignore_value / ignore_lease semantics and errors")
def _(r):
    r.v3("/v3/kv/put", kv("ig/a", "orig"))
    r.v3("/v3/kv/put", {"key": b64("ig/a"), "ignore_value": True, "prev_kv": True})
    r.v3("/v3/kv/put", {"key": b64("ig/missing"), "ignore_value": True}, note="key must exist")
    r.v3("/v3/kv/put", {"key": b64("ig/a"), "value": b64("x"), "ignore_value": True})
    r.v3("/v3/kv/put", {"key": b64("ig/a"), "value": b64("y"), "ignore_lease": True})
    r.v3("/v3/kv/put", {"key": b64("ig/a"), "value": b64("y"), "ignore_lease": True, "lease": "12345"})
    r.v3("/v3/kv/put", {"key": b64("ig/missing"), "value": b64("y"), "ignore_lease": True})
    r.v3("/v3/kv/range", kv("ig/a"))


@scenario("v3", "v3.kv.range_keys", "Range single/missing/prefix/from-key/all-keys")
def _(r):
    for k in ["rb/a", "rb/b", "rb/c", "rb/d", "rc/x"]:
        r.v3("/v3/kv/put", kv(k, "val-" + k))
    r.v3("/v3/kv/range", kv("rb/a"))
    r.v3("/v3/kv/range", kv("rb/zzz"), note="no match: no kvs, no count")
    r.v3("/v3/kv/range", kv("rb/", range_end=b64("rb0")), note="prefix")
    r.v3("/v3/kv/range", kv("rb/c", range_end=b64("\x00")), note="from key (range_end = \\0)")
    r.v3("/v3/kv/range", {"key": b64("\x00"), "range_end": b64("\x00"), "keys_only": True}, note="all keys")
    r.v3("/v3/kv/range", kv("rb/b", range_end=b64("rb/a")), note="range_end < key: empty")
    r.v3("/v3/kv/range", kv("rb/b", range_end=b64("rb/b")), note="range_end == key: empty")


@scenario("v3", "v3.kv.range_options", "limit/more/count, keys_only, count_only, serializable")
def _(r):
    for k in ["ro/a", "ro/b", "ro/c", "ro/d"]:
        r.v3("/v3/kv/put", kv(k, "v"))
    R = dict(range_end=b64("ro0"))
    r.v3("/v3/kv/range", kv("ro/", limit=2, **R))
    r.v3("/v3/kv/range", kv("ro/", limit="2", **R), note="int64 may be a string")
    r.v3("/v3/kv/range", kv("ro/", limit=4, **R), note="limit == count: more absent")
    r.v3("/v3/kv/range", kv("ro/", limit=-1, **R), note="negative limit = no limit")
    r.v3("/v3/kv/range", kv("ro/", keys_only=True, **R))
    r.v3("/v3/kv/range", kv("ro/", count_only=True, **R))
    r.v3("/v3/kv/range", kv("ro/", count_only=True, limit=1, **R), note="count_only ignores limit, no more flag")
    r.v3("/v3/kv/range", kv("ro/", serializable=True, limit=1, **R))
    r.v3("/v3/kv/range", kv("ro/", keys_only=True, count_only=True, **R))


@scenario("v3", "v3.kv.range_sort", "sort_order / sort_target combinations")
def _(r):
    r.v3("/v3/kv/put", kv("so/b", "3"))
    r.v3("/v3/kv/put", kv("so/a", "2"))
    r.v3("/v3/kv/put", kv("so/c", "1"))
    r.v3("/v3/kv/put", kv("so/a", "9"))
    rng = dict(range_end=b64("so0"))
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order="DESCEND"))
    r.v3("/v3/kv/range", kv("so/", **rng, sort_order="ASCEND", sort_target="VALUE"))
    r.v3("/v3/kv/range", kv("so/", **rng, sort_order="DESCEND", sort_target="VERSION"))
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order="ASCEND", sort_target="CREATE"))
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order="DESCEND", sort_target="MOD"))
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order=2, sort_target=4), note="enums as numbers")
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_target="MOD"),
         note="target without order: NONE order + non-KEY target => ascending")
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order="DESCEND", limit=2),
         note="sort happens before limit")
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order="SIDEWAYS"), note="bad enum name")
    r.v3("/v3/kv/range", kv("so/", keys_only=True, **rng, sort_order=7), note="unknown enum number")


@scenario("v3", "v3.kv.range_revision", "revision time travel; future revision; mod/create revision filters")
def _(r):
    a = r.v3("/v3/kv/put", kv("rv/a", "1"))
    r1 = int(jget(a, "header", "revision", default="0"))
    r.v3("/v3/kv/put", kv("rv/a", "2"))
    r.v3("/v3/kv/put", kv("rv/b", "1"))
    r.v3("/v3/kv/range", kv("rv/a", revision=r1))
    r.v3("/v3/kv/range", kv("rv/a", revision=str(r1 + 1)))
    r.v3("/v3/kv/range", kv("rv/b", revision=r1), note="did not exist yet")
    r.v3("/v3/kv/range", kv("rv/a", revision=r1 + 1000))
    r.v3("/v3/kv/range", kv("rv/a", revision=-1), note="negative revision = current")
    rng = dict(range_end=b64("rv0"), keys_only=True)
    r.v3("/v3/kv/range", kv("rv/", min_mod_revision=r1 + 1, **rng))
    r.v3("/v3/kv/range", kv("rv/", max_mod_revision=r1 + 1, **rng))
    r.v3("/v3/kv/range", kv("rv/", min_create_revision=r1 + 1, **rng))
    r.v3("/v3/kv/range", kv("rv/", max_create_revision=r1, **rng))
    r.v3("/v3/kv/range", kv("rv/", max_create_revision=r1, count_only=True, range_end=b64("rv0")),
         note="count ignores the filters")
    r.v3("/v3/kv/range", kv("rv/", min_mod_revision=r1 + 1, limit=1, **rng))


@scenario("v3", "v3.kv.deleterange", "DeleteRange single/prefix/prev_kv/missing/all")
def _(r):
    for k in ["dr/a", "dr/b", "dr/c"]:
        r.v3("/v3/kv/put", kv(k, k))
    r.v3("/v3/kv/deleterange", kv("dr/a"))
    r.v3("/v3/kv/deleterange", kv("dr/a"), note="deleted 0 -> field absent, revision unchanged")
    r.v3("/v3/kv/deleterange", kv("dr/", range_end=b64("dr0"), prev_kv=True))
    r.v3("/v3/kv/deleterange", {})
    r.v3("/v3/kv/put", kv("dr2/a", "x"))
    r.v3("/v3/kv/deleterange", {"key": b64("dr2/"), "range_end": b64("\x00")},
         note="delete from key to the end of the keyspace")


@scenario("v3", "v3.kv.txn_branches", "Txn success/failure branches with nested range/put/delete responses")
def _(r):
    r.v3("/v3/kv/put", kv("tx/a", "1"))
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tx/a"), "target": "VALUE", "result": "EQUAL", "value": b64("1")}],
                        "success": [{"request_put": kv("tx/a", "2", prev_kv=True)}, {"request_range": kv("tx/a")}],
                        "failure": [{"request_range": kv("tx/a")}]})
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tx/a"), "target": "VALUE", "result": "EQUAL", "value": b64("1")}],
                        "success": [{"request_put": kv("tx/a", "3")}],
                        "failure": [{"request_range": kv("tx/a")}, {"request_delete_range": kv("tx/none")}]},
         note="failure branch: succeeded absent")
    r.v3("/v3/kv/txn", {}, note="empty txn: succeeded=true, no responses")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tx/a"), "target": "VALUE", "result": "EQUAL", "value": b64("nope")}]},
         note="failed compare, no ops: body is just the header")
    r.v3("/v3/kv/txn", {"success": [{"request_put": kv("tx/m1", "1")}, {"request_put": kv("tx/m2", "1")},
                                    {"request_delete_range": kv("tx/m1", prev_kv=True)}]},
         note="put and delete of the same key (tx/m1) in one txn -> duplicate key")


@scenario("v3", "v3.kv.txn_compare", "Compare targets VALUE/VERSION/CREATE/MOD/LEASE, results, ranges, missing keys")
def _(r):
    p = r.v3("/v3/kv/put", kv("tc/a", "1"))
    rev = jget(p, "header", "revision", default="0")
    r.v3("/v3/kv/put", kv("tc/a", "2"))
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/a"), "target": "VERSION", "result": "GREATER", "version": "1"},
                                    {"key": b64("tc/a"), "target": "CREATE", "result": "EQUAL", "create_revision": rev},
                                    {"key": b64("tc/a"), "target": "MOD", "result": "NOT_EQUAL", "mod_revision": rev},
                                    {"key": b64("tc/a"), "target": "LEASE", "result": "EQUAL", "lease": "0"}],
                        "success": [{"request_range": kv("tc/a", keys_only=True)}]})
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/missing"), "target": "VERSION", "result": "EQUAL", "version": "0"}],
                        "success": [{"request_put": kv("tc/missing", "created")}]},
         note="version==0 on a missing key is true (create-if-absent idiom)")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/missing"), "result": "EQUAL"}]},
         note="target VERSION and result EQUAL are the zero enums; version==0 is now false")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/none"), "target": "VALUE", "result": "NOT_EQUAL", "value": b64("x")}]},
         note="VALUE compare on a missing key is always false")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/none"), "target": "MOD", "result": "LESS", "mod_revision": "1"}]},
         note="MOD compare on a missing key compares 0")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/"), "range_end": b64("tc0"), "target": "VERSION", "result": "GREATER", "version": "0"}],
                        "success": [{"request_range": kv("tc/", range_end=b64("tc0"), count_only=True)}]},
         note="compare over a range: every key must satisfy it")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/a"), "target": "VALUE", "result": "LESS", "value": b64("3")}]},
         note="byte-wise value comparison")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/a"), "target": "VALUE", "result": "GREATER"}]},
         note="VALUE compare without value: compares with empty")
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("tc/a"), "target": "VERSION", "result": "LESS", "version": 5}]},
         note="int64 as JSON number")


@scenario("v3", "v3.kv.txn_nested", "Nested txn (request_txn) and its response shape")
def _(r):
    r.v3("/v3/kv/put", kv("tn/a", "1"))
    r.v3("/v3/kv/txn", {"success": [{"request_txn": {"compare": [], "success": [{"request_range": kv("tn/a")}]}}]},
         note="inner TxnResponse has an empty header object")
    r.v3("/v3/kv/txn", {"success": [{"request_txn": {
        "compare": [{"key": b64("tn/a"), "target": "VALUE", "result": "EQUAL", "value": b64("x")}],
        "success": [{"request_put": kv("tn/b", "s")}],
        "failure": [{"request_put": kv("tn/b", "f")}, {"request_range": kv("tn/b")}]}}]})


@scenario("v3", "v3.kv.txn_errors", "Txn validation: too many ops, duplicate keys, empty op, empty key")
def _(r):
    ops = [{"request_put": kv(f"te/{i}", "x")} for i in range(129)]
    r.v3("/v3/kv/txn", {"success": ops}, note="129 ops > max-txn-ops 128")
    ops = [{"request_put": kv(f"te/{i}", "x")} for i in range(128)]
    r.v3("/v3/kv/txn", {"success": ops}, note="exactly 128 ops is fine (response > 2048 bytes: chunked)")
    r.v3("/v3/kv/txn", {"success": [{"request_put": kv("te/dup", "1")}, {"request_put": kv("te/dup", "2")}]})
    r.v3("/v3/kv/txn", {"success": [{"request_put": kv("te/dup", "1")}, {"request_delete_range": kv("te/dup")}]})
    r.v3("/v3/kv/txn", {"success": [{"request_put": kv("te/dup2", "1")}, {"request_delete_range": kv("te/", range_end=b64("te0"))}]},
         note="put inside a deleted range")
    r.v3("/v3/kv/txn", {"success": [{"request_put": kv("te/dup", "1")}], "failure": [{"request_put": kv("te/dup", "2")}]},
         note="same key in success and failure is fine")
    r.v3("/v3/kv/txn", {"success": [{"request_delete_range": kv("te/dup")}, {"request_delete_range": kv("te/dup")}]},
         note="two deletes of the same key are fine")
    r.v3("/v3/kv/txn", {"success": [{}]}, note="empty RequestOp")
    r.v3("/v3/kv/txn", {"compare": [{"key": "", "target": "VALUE", "value": b64("x")}]})
    r.v3("/v3/kv/txn", {"success": [{"request_range": {"key": ""}}]})
    r.v3("/v3/kv/txn", {"compare": [{"key": b64("k"), "target": "VALUE", "value": b64("x")}] * 129})
    r.v3("/v3/kv/txn", {"success": [{"request_put": {"key": b64("te/l"), "value": b64("1"), "lease": "424242"}}]},
         note="unknown lease inside txn")


@scenario("v3", "v3.lease.grant", "Lease grant: server/client IDs, minimum TTL, errors")
def _(r):
    r.v3("/v3/lease/grant", {"TTL": "60"})
    r.v3("/v3/lease/grant", {"TTL": 60, "ID": 7777}, note="client-chosen ID, numbers accepted")
    r.v3("/v3/lease/grant", {"TTL": 60, "ID": "7777"}, note="duplicate ID")
    r.v3("/v3/lease/grant", {"TTL": 1}, note="TTL below minimum is raised")
    r.v3("/v3/lease/grant", {"TTL": "9000000001"}, note="too large")
    r.v3("/v3/lease/grant", {"TTL": "9000000000"}, note="maximum")
    r.v3("/v3/lease/grant", {}, note="TTL 0")
    r.v3("/v3/lease/grant", {"TTL": -5}, note="negative TTL")
    r.v3("/v3/lease/grant", {"TTL": 10, "ID": -3}, note="negative client ID")


@scenario("v3", "v3.lease.attach_ttl", "Keys attached to a lease; timetolive with keys; leases list; aliases")
def _(r):
    g = r.v3("/v3/lease/grant", {"TTL": "60"})
    lid = jget(g, "ID", default="0")
    r.lid = lid
    r.v3("/v3/kv/put", {"key": b64("ls/a"), "value": b64("1"), "lease": lid})
    r.v3("/v3/kv/put", {"key": b64("ls/b"), "value": b64("1"), "lease": lid})
    r.v3("/v3/kv/put", {"key": b64("ls/c"), "value": b64("1"), "lease": "999999"}, note="unknown lease")
    r.v3("/v3/kv/range", kv("ls/", range_end=b64("ls0")))
    r.v3("/v3/lease/timetolive", {"ID": lid, "keys": True})
    r.v3("/v3/kv/lease/timetolive", {"ID": lid})
    r.v3("/v3/lease/timetolive", {"ID": "123456789"}, note="missing lease: TTL -1, no error")
    r.v3("/v3/lease/leases", {})
    r.v3("/v3/kv/lease/leases", {})
    r.v3("/v3/kv/put", {"key": b64("ls/a"), "value": b64("2")}, note="put without lease detaches the key")
    r.v3("/v3/lease/timetolive", {"ID": lid, "keys": True})


@scenario("v3", "v3.lease.keepalive_revoke", "Keepalive over HTTP (one response per request object), revoke")
def _(r):
    lid = getattr(r, "lid", "0")
    r.v3("/v3/lease/keepalive", {"ID": lid}, timeout=3, note="stream of one result; ends when body ends")
    r.v3("/v3/lease/keepalive", {"ID": "123456789"}, timeout=3, note="unknown lease: TTL absent (0)")
    r.req("POST", "/v3/lease/keepalive", content_type="application/json", timeout=4, max_lines=3,
          chunked=[(0.0, {"ID": lid}), (0.5, {"ID": lid}), (1.0, {"ID": "123456789"}), (1.5, None)],
          note="several request objects in one chunked body -> one result line each")
    r.v3("/v3/lease/revoke", {"ID": lid})
    r.v3("/v3/kv/range", kv("ls/", range_end=b64("ls0")), note="attached keys removed with the lease")
    r.v3("/v3/lease/revoke", {"ID": lid})
    r.v3("/v3/kv/lease/revoke", {"ID": "7777"})
    r.v3("/v3/lease/revoke", {})
    r.v3("/v3/lease/keepalive", {"ID": lid}, timeout=3, note="revoked lease")


@scenario("v3", "v3.lease.expiry", "Lease with short TTL expires and deletes its keys")
def _(r):
    g = r.v3("/v3/lease/grant", {"TTL": "2"})
    lid = jget(g, "ID", default="0")
    r.v3("/v3/kv/put", {"key": b64("le/a"), "value": b64("1"), "lease": lid})
    r.v3("/v3/lease/timetolive", {"ID": lid, "keys": True})
    r.v3("/v3/watch", {"create_request": {"key": b64("le/a"), "prev_kv": True}}, timeout=5, max_lines=2,
         note="expiry shows up as a DELETE event")
    r.v3("/v3/kv/range", kv("le/a"))
    r.v3("/v3/lease/timetolive", {"ID": lid, "keys": True})


@scenario("v3", "v3.watch.key", "Watch one key from a past revision with prev_kv: created, history batch, live events")
def _(r):
    p = r.v3("/v3/kv/put", kv("w/a", "0"))
    rev = int(jget(p, "header", "revision", default="0"))
    r.v3("/v3/kv/put", kv("w/a", "1"))
    r.v3("/v3/watch", {"create_request": {"key": b64("w/a"), "start_revision": str(rev), "prev_kv": True}},
         timeout=4, max_lines=4,
         during=[{"after": 0.7, "method": "POST", "path": "/v3/kv/deleterange", "json_body": kv("w/a")},
                 {"after": 1.2, "method": "POST", "path": "/v3/kv/put", "json_body": kv("w/a", "2")}])


@scenario("v3", "v3.watch.prefix", "Prefix watch; a txn's events arrive in one message")
def _(r):
    r.v3("/v3/watch", {"create_request": {"key": b64("wp/"), "range_end": b64("wp0")}}, timeout=3, max_lines=3,
         during=[{"after": 0.7, "method": "POST", "path": "/v3/kv/txn",
                  "json_body": {"success": [{"request_put": kv("wp/x", "1")}, {"request_put": kv("wp/y", "1")}]}},
                 {"after": 1.2, "method": "POST", "path": "/v3/kv/deleterange",
                  "json_body": kv("wp/", range_end=b64("wp0"))}])
    r.v3("/v3/watch", {"create_request": {"key": b64("wp/"), "range_end": b64("\x00")}}, timeout=2, max_lines=2,
         during=[{"after": 0.5, "method": "POST", "path": "/v3/kv/put", "json_body": kv("wq", "1")}],
         note="range_end \\0: every key >= key")


@scenario("v3", "v3.watch.filters_ids", "filters NOPUT/NODELETE, client-chosen watch_id")
def _(r):
    r.v3("/v3/watch", {"create_request": {"key": b64("wf/"), "range_end": b64("wf0"), "filters": ["NOPUT"],
                                          "watch_id": "5"}}, timeout=3, max_lines=2,
         during=[{"after": 0.5, "method": "POST", "path": "/v3/kv/put", "json_body": kv("wf/z", "1")},
                 {"after": 0.9, "method": "POST", "path": "/v3/kv/deleterange", "json_body": kv("wf/z")}])
    r.v3("/v3/watch", {"create_request": {"key": b64("wf/"), "range_end": b64("wf0"), "filters": ["NODELETE"]}},
         timeout=3, max_lines=2,
         during=[{"after": 0.5, "method": "POST", "path": "/v3/kv/put", "json_body": kv("wf/z", "1")},
                 {"after": 0.9, "method": "POST", "path": "/v3/kv/deleterange", "json_body": kv("wf/z")}])


@scenario("v3", "v3.watch.revisions", "Future start revision waits; start_revision 1 replays the whole history")
def _(r):
    r.v3("/v3/watch", {"create_request": {"key": b64("w/a"), "start_revision": "999999"}}, timeout=1.5, max_lines=2,
         note="future start revision: just waits")
    r.v3("/v3/watch", {"create_request": {"key": b64("p/"), "range_end": b64("p0"), "start_revision": "1"}},
         timeout=2, max_lines=2, note="all history of a prefix in one batch (keys of v3.kv.put); runs before any compaction")


@scenario("v3", "v3.watch.control", "Several requests on one stream: progress, second watch, duplicate id, cancel")
def _(r):
    r.v3("/v3/kv/put", kv("wc/a", "0"))
    r.req("POST", "/v3/watch", content_type="application/json", timeout=4.5, max_lines=7,
          chunked=[(0.0, {"create_request": {"key": b64("wc/a")}}),
                   (0.6, {"progress_request": {}}),
                   (1.2, {"create_request": {"key": b64("wc/b"), "watch_id": "9"}}),
                   (1.5, {"create_request": {"key": b64("wc/c"), "watch_id": "9"}}),
                   (1.8, {"cancel_request": {"watch_id": "0"}}),
                   (2.4, {"cancel_request": {"watch_id": "12345"}}),
                   (3.0, None)],
          during=[{"after": 2.1, "method": "POST", "path": "/v3/kv/put", "json_body": kv("wc/b", "1")}],
          note="2nd..nth JSON objects of the request body are further WatchRequests; "
               "ending the body does NOT end the response stream (cut by deadline)")
    r.v3("/v3/watch", {}, timeout=1.5, note="empty WatchRequest: nothing is ever answered (no headers)")
    r.req("POST", "/v3/watch", body="not json", content_type="application/json", timeout=3)
    r.req("POST", "/v3/watch", body="", content_type="application/json", timeout=2, note="empty body")
    r.v3("/v3/watch", {"create_request": {"key": ""}}, timeout=2, max_lines=1, note="empty key is allowed for watch (\\0)")


@scenario("v3", "v3.kv.compaction", "Compaction, then reads/watches at compacted revisions")
def _(r):
    r.v3("/v3/kv/put", kv("cp/a", "1"))
    p = r.v3("/v3/kv/put", kv("cp/a", "2"))
    rev = int(jget(p, "header", "revision", default="0"))
    r.v3("/v3/kv/put", kv("cp/a", "3"))
    r.v3("/v3/kv/compaction", {"revision": str(rev)})
    r.v3("/v3/kv/range", kv("cp/a", revision=rev - 1))
    r.v3("/v3/kv/range", kv("cp/a", revision=rev), note="the compaction revision itself is still readable")
    r.v3("/v3/kv/compaction", {"revision": str(rev)}, note="compacting again at the same revision")
    r.v3("/v3/kv/compaction", {"revision": str(rev - 1)})
    r.v3("/v3/kv/compaction", {"revision": str(rev + 100000)})
    r.v3("/v3/kv/compaction", {"revision": str(rev + 1), "physical": True}, note="physical: waits for the compaction")
    r.v3("/v3/watch", {"create_request": {"key": b64("cp/a"), "start_revision": str(rev - 1)}}, timeout=2, max_lines=3,
         note="watch from a compacted revision: created, then canceled with compact_revision; stream stays open")
    r.v3("/v3/kv/compaction", {}, note="revision 0")
    r.v3("/v3/kv/txn", {"success": [{"request_range": kv("cp/a", revision=1)}]}, note="compacted read inside a txn")


@scenario("v3", "v3.maintenance.status", "status, alarm list, hash (HashKV is shadowed: same path)")
def _(r):
    r.v3("/v3/maintenance/status", {})
    r.v3("/v3/maintenance/alarm", {})
    r.v3("/v3/maintenance/alarm", {"action": "GET"})
    r.v3("/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": "1", "alarm": "NOSPACE"})
    r.v3("/v3/maintenance/hash", {})
    r.v3("/v3/maintenance/hash", {"revision": "0"}, note="HashKV request body still goes to Hash")


@scenario("v3", "v3.maintenance.admin", "defragment, snapshot stream, move leader")
def _(r):
    r.v3("/v3/maintenance/defragment", {})
    r.v3("/v3/maintenance/snapshot", {}, timeout=10, note="stream of blob chunks, base64; last carries no remaining_bytes")
    r.v3("/v3/maintenance/transfer-leadership", {"targetID": "1"})
    st = r.v3("/v3/maintenance/status", {})
    me = jget(st, "leader", default="0")
    r.v3("/v3/maintenance/transfer-leadership", {"targetID": me}, note="transfer to self")


@scenario("v3", "v3.cluster", "member list / errors of add/remove/update/promote on a single node")
def _(r):
    ml = r.v3("/v3/cluster/member/list", {})
    r.v3("/v3/cluster/member/remove", {"ID": "1234"})
    r.v3("/v3/cluster/member/update", {"ID": "1234", "peerURLs": ["http://127.0.0.1:42397"]})
    r.v3("/v3/cluster/member/promote", {"ID": "1234"})
    me = jget(ml, "members", 0, "ID", default="0")
    r.v3("/v3/cluster/member/promote", {"ID": me})
    r.v3("/v3/cluster/member/add", {"peerURLs": ["not-a-url"]})
    r.v3("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:42380"]}, note="existing peer URL")
    r.v3("/v3/cluster/member/update", {"ID": me, "peerURLs": ["http://127.0.0.1:42380"]}, note="no-op update of self")


@scenario("v3", "v3.gateway.routing", "Gateway routing: methods, unknown paths, prefixes, CORS")
def _(r):
    r.req("GET", "/v3/kv/range")
    r.req("PUT", "/v3/kv/range", body="{}")
    r.req("POST", "/v3/kv/nothing", body="{}")
    r.req("POST", "/v3/kv/range/", body='{"key":"cmIvYQ=="}', content_type="application/json", note="trailing slash")
    r.req("POST", "/v3beta/kv/range", body='{"key":"cmIvYQ=="}', content_type="application/json")
    r.req("POST", "/v3alpha/kv/range", body='{"key":"cmIvYQ=="}', content_type="application/json")
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ=="}', content_type="application/json",
          headers=[["Origin", "http://dash.example"]])
    r.req("OPTIONS", "/v3/kv/range", headers=[["Origin", "http://dash.example"],
                                              ["Access-Control-Request-Method", "POST"]])
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ=="}', content_type="application/x-www-form-urlencoded",
          note="form content type on POST")
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ=="}', content_type="application/json",
          headers=[["X-HTTP-Method-Override", "GET"]])


@scenario("v3", "v3.gateway.json", "JSON decoding rules of the gateway (jsonpb)")
def _(r):
    r.v3("/v3/kv/put", kv("rb/a", "x"))
    J = "application/json"
    r.req("POST", "/v3/kv/range", body="{not json", content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": 5}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "!!!notbase64"}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "' + base64.urlsafe_b64encode(b"rb/a?>").decode() + '"}',
          content_type=J, note="URL-safe base64")
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ"}', content_type=J, note="unpadded base64")
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "bogus_field": 1}', content_type=J,
          note="unknown fields are ignored")
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "rangeEnd": "cmIwYQ==", "keysOnly": true}', content_type=J,
          note="lowerCamel JSON names are accepted too")
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "limit": "abc"}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "limit": 1.5}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "limit": 1e2}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "keys_only": "true"}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "keys_only": null}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key": "cmIvYQ==", "key": "eA=="}', content_type=J, note="duplicate field")
    r.req("POST", "/v3/kv/range", body="", content_type=J, note="empty body = empty request")
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ=="}', note="no Content-Type header")
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ=="}', content_type="text/plain")
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ=="} {"key":"eA=="}', content_type=J,
          note="trailing data after the first object is ignored")
    r.req("POST", "/v3/kv/range", body='[]', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ==","revision":"9223372036854775807"}', content_type=J)
    r.req("POST", "/v3/kv/range", body='{"key":"cmIvYQ==","revision":"9223372036854775808"}', content_type=J)


@scenario("v3", "v3.gateway.limits", "Request size limits: --max-request-bytes (1.5 MiB) and the gRPC receive limit")
def _(r):
    big = base64.b64encode(b"z" * (1536 * 1024)).decode()
    r.req("POST", "/v3/kv/put", body='{"key":"Ymln","value":"' + big + '"}', content_type="application/json",
          note="value of exactly 1.5 MiB: request > max-request-bytes once encoded")
    big = base64.b64encode(b"z" * (1500 * 1024)).decode()
    r.req("POST", "/v3/kv/put", body='{"key":"Ymln","value":"' + big + '"}', content_type="application/json",
          note="1500 KiB value fits")
    big = base64.b64encode(b"z" * (2100 * 1024)).decode()
    r.req("POST", "/v3/kv/put", body='{"key":"Ymln","value":"' + big + '"}', content_type="application/json",
          note="over the gRPC receive limit (max-request-bytes + 512 KiB)")
    r.v3("/v3/kv/deleterange", kv("big"))


@scenario("v3", "v3.lock_election", "v3lock and v3election gateway routes")
def _(r):
    g = r.v3("/v3/lease/grant", {"TTL": "30"})
    lid = jget(g, "ID", default="0")
    lk = r.v3("/v3/lock/lock", {"name": b64("mylock"), "lease": lid})
    key = jget(lk, "key", default="")
    r.v3("/v3/lock/unlock", {"key": key})
    r.v3("/v3/lock/lock", {"name": b64("mylock")}, timeout=3, note="lease 0 is accepted by 3.4")
    c = r.v3("/v3/election/campaign", {"name": b64("myelection"), "lease": lid, "value": b64("me")})
    r.v3("/v3/election/leader", {"name": b64("myelection")})
    leader = jget(c, "leader", default={})
    r.v3("/v3/election/proclaim", {"leader": leader, "value": b64("me2")})
    r.v3("/v3/election/observe", {"name": b64("myelection")}, timeout=2, max_lines=1)
    r.v3("/v3/election/resign", {"leader": leader})
    r.v3("/v3/election/leader", {"name": b64("myelection")}, note="no leader")
    r.v3("/v3/lease/revoke", {"ID": lid})


@scenario("v3", "v3.v2_isolation", "v2 and v3 keyspaces are separate; v2 writes do not move the v3 revision")
def _(r):
    a = r.v3("/v3/kv/range", kv("iso"))
    r.v2("PUT", "/iso", form={"value": "v2"})
    r.v3("/v3/kv/range", kv("iso"), note="same revision as before, key absent")
    r.v3("/v3/kv/put", kv("iso", "v3"))
    r.v2("GET", "/iso", note="still the v2 value")
    r.v3("/v3/maintenance/status", {}, note="raftIndex counts both")


@scenario("v3", "v3.auth.setup", "v3 auth management before enabling")
def _(r):
    r.v3("/v3/auth/enable", {}, note="no root user -> error")
    r.v3("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    r.v3("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    r.v3("/v3/auth/user/add", {"name": "", "password": "x"})
    r.v3("/v3/auth/enable", {}, note="root has no root role yet")
    r.v3("/v3/auth/role/add", {"name": "root"})
    r.v3("/v3/auth/role/add", {"name": "root"})
    r.v3("/v3/auth/role/add", {"name": ""})
    r.v3("/v3/auth/user/grant", {"user": "root", "role": "root"})
    r.v3("/v3/auth/role/add", {"name": "reader"})
    r.v3("/v3/auth/role/grant", {"name": "reader", "perm": {"permType": "READ", "key": b64("au/"), "range_end": b64("au0")}})
    r.v3("/v3/auth/role/grant", {"name": "reader", "perm": {"permType": "WRITE", "key": b64("au/w")}})
    r.v3("/v3/auth/role/get", {"role": "reader"})
    r.v3("/v3/auth/role/get", {"role": "nosuch"})
    r.v3("/v3/auth/user/add", {"name": "alice", "password": "alicepw"})
    r.v3("/v3/auth/user/add", {"name": "nopw", "options": {"no_password": True}}, note="no_password option")
    r.v3("/v3/auth/user/grant", {"user": "alice", "role": "reader"})
    r.v3("/v3/auth/user/grant", {"user": "alice", "role": "nosuch"})
    r.v3("/v3/auth/user/get", {"name": "alice"})
    r.v3("/v3/auth/user/get", {"name": "nosuch"})
    r.v3("/v3/auth/user/list", {})
    r.v3("/v3/auth/role/list", {})
    r.v3("/v3/kv/put", kv("au/x", "1"))


@scenario("v3", "v3.auth.enforce", "v3 auth enabled: authenticate, Authorization header, permission errors")
def _(r):
    r.v3("/v3/auth/enable", {})
    r.v3("/v3/auth/enable", {}, note="enabling twice")
    r.v3("/v3/kv/range", kv("au/x"), note="no token once auth is on")
    r.v3("/v3/auth/authenticate", {"name": "alice", "password": "wrong"})
    r.v3("/v3/auth/authenticate", {"name": "nopw", "password": ""}, note="no_password user cannot authenticate")
    t = r.v3("/v3/auth/authenticate", {"name": "alice", "password": "alicepw"})
    tok = jget(t, "token", default="")
    r.v3("/v3/kv/range", kv("au/x"), headers=[["Authorization", tok]])
    r.v3("/v3/kv/put", kv("au/x", "2"), headers=[["Authorization", tok]], note="read-only for au/x")
    r.v3("/v3/kv/put", kv("au/w", "2"), headers=[["Authorization", tok]], note="write-only key")
    r.v3("/v3/kv/range", kv("au/w"), headers=[["Authorization", tok]])
    r.v3("/v3/kv/range", kv("other"), headers=[["Authorization", tok]])
    r.v3("/v3/kv/range", kv("au/", range_end=b64("au0")), headers=[["Authorization", tok]], note="range exactly granted")
    r.v3("/v3/kv/range", kv("au/", range_end=b64("\x00")), headers=[["Authorization", tok]], note="wider than granted")
    r.v3("/v3/kv/range", kv("au/x"), headers=[["Authorization", "garbage.token"]])
    r.v3("/v3/kv/range", kv("au/x"), headers=[["Authorization", "Bearer " + tok]])
    r.v3("/v3/kv/range", kv("au/x"), headers=[["Token", tok]], note="'token' header is not forwarded by the gateway")
    r.v3("/v3/kv/range", kv("au/x"), headers=[["Grpc-Metadata-Token", tok]], note="Grpc-Metadata-<name> is forwarded")
    r.v3("/v3/watch", {"create_request": {"key": b64("other")}}, headers=[["Authorization", tok]], timeout=2, max_lines=1,
         note="watch without permission: created+canceled in one message")
    r.v3("/v3/watch", {"create_request": {"key": b64("au/x")}}, timeout=2, max_lines=1,
         note="watch without token")
    r.v3("/v3/auth/user/list", {}, headers=[["Authorization", tok]], note="non-root")
    lg = r.v3("/v3/lease/grant", {"TTL": 10}, headers=[["Authorization", tok]], note="leases need no permission")
    r.v3("/v3/maintenance/status", {}, note="status needs no token")
    r.v3("/v3/cluster/member/list", {}, note="member list needs no token")
    st = r.v3("/v3/maintenance/status", {}, headers=[["Authorization", tok]])
    r.v3("/v3/kv/compaction", {"revision": jget(st, "header", "revision", default="1")}, headers=[["Authorization", tok]],
         note="compaction by a non-root user is accepted (no auth check on compaction in 3.4)")
    r.v3("/v3/auth/user/changepw", {"name": "alice", "password": "new"}, headers=[["Authorization", tok]])
    A = [["Authorization", tok]]
    r.v3("/v3/kv/compaction", {"revision": jget(st, "header", "revision", default="1")},
         note="compaction without any token is also accepted")
    r.v3("/v3/maintenance/alarm", {}, note="alarm: no auth check")
    r.v3("/v3/maintenance/hash", {}, note="hash without token: raw auth error, code 2 -> 500")
    r.v3("/v3/maintenance/hash", {}, headers=A, note="hash needs root: 'auth: permission denied', code 2")
    r.v3("/v3/maintenance/defragment", {}, headers=A)
    r.v3("/v3/maintenance/snapshot", {}, headers=A, timeout=3, note="stream error before the first message")
    ml = r.v3("/v3/cluster/member/list", {})
    me = jget(ml, "members", 0, "ID", default="0")
    r.v3("/v3/cluster/member/update", {"ID": me, "peerURLs": ["http://127.0.0.1:42380"]},
         note="membership changes need root")
    r.v3("/v3/cluster/member/update", {"ID": me, "peerURLs": ["http://127.0.0.1:42380"]}, headers=A)
    r.v3("/v3/maintenance/transfer-leadership", {"targetID": me}, note="move leader: no auth check")
    r.v3("/v3/auth/user/get", {"name": "alice"}, headers=A, note="a user may read itself")
    r.v3("/v3/auth/user/get", {"name": "root"}, headers=A)
    r.v3("/v3/auth/role/get", {"role": "reader"}, headers=A, note="a user may read its own roles")
    r.v3("/v3/auth/role/get", {"role": "root"}, headers=A)
    r.v3("/v3/lease/revoke", {"ID": jget(lg, "ID", default="0")}, headers=A, note="revoke of a lease without keys")


@scenario("v3", "v3.auth.teardown", "v3 auth revoke/delete/disable and the token-after-disable quirk")
def _(r):
    rt = r.v3("/v3/auth/authenticate", {"name": "root", "password": "rootpw"})
    R = [["Authorization", jget(rt, "token", default="")]]
    r.v3("/v3/auth/user/changepw", {"name": "alice", "password": "new"}, headers=R)
    r.v3("/v3/auth/user/revoke", {"name": "alice", "role": "reader"}, headers=R)
    r.v3("/v3/auth/user/revoke", {"name": "alice", "role": "reader"}, headers=R)
    r.v3("/v3/auth/role/revoke", {"role": "reader", "key": b64("au/"), "range_end": b64("au0")}, headers=R)
    r.v3("/v3/auth/role/revoke", {"role": "reader", "key": b64("au/"), "range_end": b64("au0")}, headers=R)
    r.v3("/v3/auth/role/delete", {"role": "reader"}, headers=R)
    r.v3("/v3/auth/user/delete", {"name": "alice"}, headers=R)
    r.v3("/v3/auth/user/delete", {"name": "alice"}, headers=R)
    r.v3("/v3/auth/user/delete", {"name": "nopw"}, headers=R)
    r.v3("/v3/auth/role/revoke", {"role": "root", "key": b64("x")}, headers=R)
    r.v3("/v3/auth/user/revoke", {"name": "root", "role": "root"}, headers=R, note="cannot revoke root from root while enabled")
    r.v3("/v3/auth/disable", {}, headers=R)
    r.v3("/v3/auth/disable", {}, note="already disabled: no error in 3.4")
    r.v3("/v3/kv/range", kv("au/x"), headers=[["Authorization", "garbage.token"]],
         note="auth off, but an invalid token is still rejected")
    r.v3("/v3/kv/range", kv("au/x"), headers=R, note="auth off, root's still-valid token")
    r.v3("/v3/auth/user/delete", {"name": "root"})
    r.v3("/v3/auth/role/delete", {"role": "root"})
    r.v3("/v3/auth/user/list", {})


# ============================ cluster suite =================================

@scenario("cluster", "cluster.reconfig_too_early", "Member add within 5 s of cluster start is refused (strict reconfig check); timing-dependent")
def _(r):
    a = r.v3("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:42388"]}, ep=0,
             note="503 unhealthy cluster if the members have not all been connected for 5 s yet")
    mid = jget(a, "member", "ID")
    if mid:
        r.v3("/v3/cluster/member/remove", {"ID": mid}, ep=0, note="cluster was already old enough: undo the add")
    r.sleep(6.0, "wait until all members have been connected for 5 s")


@scenario("cluster", "cluster.members_and_stats", "3-member cluster: members, leader, stats on leader/follower")
def _(r):
    st = r.v3("/v3/maintenance/status", {}, ep=0)
    leader = jget(st, "leader", default="0")
    ml = r.v3("/v3/cluster/member/list", {}, ep=0)
    lead_ep = None
    follower_eps = []
    for m in jget(ml, "members", default=[]):
        if not m.get("clientURLs"):
            continue  # not started / not yet published
        if m.get("ID") == leader:
            lead_ep = m["clientURLs"][0]
        else:
            follower_eps.append(m["clientURLs"][0])
    r.leader_ep, r.follower_eps = lead_ep, follower_eps
    r.req("GET", "/v2/members", ep=lead_ep)
    r.req("GET", "/v2/members/leader", ep=follower_eps[0])
    r.req("GET", "/v2/stats/leader", ep=lead_ep)
    r.req("GET", "/v2/stats/leader", ep=follower_eps[0], note="follower -> 403 not current leader")
    r.req("GET", "/v2/stats/self", ep=lead_ep)
    r.req("GET", "/v2/stats/self", ep=follower_eps[0])
    r.req("GET", "/v2/machines", ep=follower_eps[0])
    r.req("GET", "/health", ep=follower_eps[1])
    r.v3("/v3/maintenance/status", {}, ep=follower_eps[0])


@scenario("cluster", "cluster.forwarding", "Writes to a follower are forwarded; reads are local unless quorum")
def _(r):
    f = r.follower_eps[0]
    r.v2("PUT", "/cl/a", form={"value": "via follower"}, ep=f)
    r.v2("GET", "/cl/a", ep=r.follower_eps[1])
    r.v2("GET", "/cl/a", query="quorum=true", ep=r.follower_eps[1])
    r.v2("GET", "/cl/a", query="wait=true", ep=r.follower_eps[1], timeout=5,
         during=[{"after": 0.7, "method": "PUT", "path": "/v2/keys/cl/a", "form": {"value": "x"}, "ep": r.leader_ep}],
         note="watch on a follower sees leader writes")
    r.v3("/v3/kv/put", kv("cl/v3", "1"), ep=f)
    r.v3("/v3/kv/range", kv("cl/v3"), ep=r.follower_eps[1])
    r.v3("/v3/kv/range", kv("cl/v3", serializable=True), ep=r.follower_eps[1])


@scenario("cluster", "cluster.member_change", "Runtime member add/update/remove through v2 and v3 APIs")
def _(r):
    a = r.req("POST", "/v2/members", json_body={"peerURLs": ["http://127.0.0.1:42388"]}, ep=r.leader_ep)
    mid = jget(a, "id", default="0")
    r.req("POST", "/v2/members", json_body={"peerURLs": ["http://127.0.0.1:42388"]}, ep=r.leader_ep, note="duplicate peer URL: source says 409, observed 500 because the strict reconfig health check (unstarted member) fires first")
    r.req("GET", "/v2/members", ep=r.follower_eps[0], note="unstarted member: empty name and clientURLs")
    r.req("PUT", f"/v2/members/{mid}", json_body={"peerURLs": ["http://127.0.0.1:42389"]}, ep=r.leader_ep)
    r.req("DELETE", f"/v2/members/{mid}", ep=r.leader_ep)
    r.req("DELETE", f"/v2/members/{mid}", ep=r.leader_ep, note="already removed -> 410")
    a = r.v3("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:42390"], "isLearner": True}, ep=r.leader_ep)
    lid = jget(a, "member", "ID", default="0")
    r.v3("/v3/cluster/member/promote", {"ID": lid}, ep=r.leader_ep, note="learner not started -> not in sync")
    r.v3("/v3/cluster/member/list", {}, ep=r.leader_ep)
    r.v3("/v3/cluster/member/remove", {"ID": lid}, ep=r.leader_ep)
    r.v3("/v3/cluster/member/remove", {"ID": lid}, ep=r.leader_ep)
    a = r.v3("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:42391"]}, ep=r.follower_eps[0])
    vid = jget(a, "member", "ID", default="0")
    r.v3("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:42392"]}, ep=r.leader_ep,
         note="with 4 members (1 down) adding a 5th would be unsafe -> strict reconfig check")
    r.v3("/v3/cluster/member/update", {"ID": vid, "peerURLs": ["http://127.0.0.1:42393"]}, ep=r.leader_ep)
    r.v3("/v3/cluster/member/remove", {"ID": vid}, ep=r.leader_ep)


@scenario("cluster", "cluster.move_leader", "transfer-leadership moves the leader; stats follow")
def _(r):
    st = r.v3("/v3/maintenance/status", {}, ep=r.follower_eps[0])
    target = jget(st, "header", "member_id", default="0")
    r.v3("/v3/maintenance/transfer-leadership", {"targetID": target}, ep=r.follower_eps[0],
         note="must be sent to the leader")
    r.v3("/v3/maintenance/transfer-leadership", {"targetID": target}, ep=r.leader_ep)
    r.sleep(1.0)
    r.req("GET", "/v2/members/leader", ep=r.leader_ep)
    r.req("GET", "/v2/stats/self", ep=r.follower_eps[0])
    r.req("GET", "/v2/stats/leader", ep=r.follower_eps[0])
    r.v2("PUT", "/cl/after", form={"value": "term changed"}, ep=r.leader_ep)



# ============================ cors suite ====================================
# run against a single node started with --cors 'http://dash.example:8080,http://127.0.0.1:3000'
# (3.4 rejects --cors entries without an explicit port: 'URL address does not have the form host:port')

@scenario("cors", "cors.whitelist", "--cors 'http://dash.example:8080,http://127.0.0.1:3000': Origin echoed only when allowed")
def _(r):
    O = "http://dash.example:8080"
    r.req("OPTIONS", "/v2/keys/x", headers=[["Origin", O], ["Access-Control-Request-Method", "PUT"]])
    r.req("OPTIONS", "/v2/keys/x", headers=[["Origin", "http://evil.example"], ["Access-Control-Request-Method", "PUT"]])
    r.req("OPTIONS", "/v2/keys/x", note="no Origin")
    r.req("GET", "/v2/keys/", headers=[["Origin", O]])
    r.req("GET", "/v2/keys/", headers=[["Origin", "http://127.0.0.1:3000"]])
    r.req("GET", "/v2/keys/", headers=[["Origin", "http://evil.example"]])
    r.req("GET", "/v2/keys/", headers=[["Origin", "http://dash.example"]], note="whitelist entries carry a port; no default-port matching")
    r.req("GET", "/version")
    r.req("POST", "/v3/kv/range", json_body={"key": b64("x")}, headers=[["Origin", O]])
    r.req("POST", "/v3/kv/range", json_body={"key": b64("x")}, headers=[["Origin", "HTTP://DASH.EXAMPLE:8080"]],
          note="origin match is exact")



# ---------------------------------------------------------------- viewing / diffing

SKIP_SHOW = {"date", "access-control-allow-headers", "access-control-allow-methods", "connection"}


def show(path, prefixes):
    """Compact human-readable dump of a transcript file."""
    for line in open(path):
        o = json.loads(line)
        if prefixes and not any(o.get("scenario", "").startswith(p) for p in prefixes):
            continue
        role = o.get("role")
        if role == "scenario":
            print(f"\n##### {o['scenario']}: {o['description']}")
            continue
        if role in ("sleep", "bulk", "recorder-error"):
            print(f"  [{role}] {o.get('seconds', '')} {o.get('note', '')} {o.get('info', '')} {o.get('error', '')}")
            continue
        q, s = o["request"], o["response"]
        body = q["body"] or ""
        if len(body) > 200:
            body = body[:200] + f"...({q['body_len']} bytes)"
        bg = "(bg) " if role == "background" else ""
        note = ("  # " + o["note"]) if o.get("note") else ""
        print(f"> {bg}{q['method']} {q['target'][:160]} {body}{note}")
        if "status" not in s:
            print(f"< (no response: {s.get('error')})")
            continue
        hs = " ".join(f"{k}={v}" for k, v in s["headers"] if k.lower() not in SKIP_SHOW)
        print(f"< {s['status']} {hs}")
        b = s["body"]
        if len(b) > 1500:
            b = b[:1500] + "..."
        if b:
            print("  " + b.rstrip("\n").replace("\n", "\n  ") + ("  [ends with \\n]" if s["body"].endswith("\n") else ""))
        if s.get("chunks") is not None:
            print(f"  (chunked: {len(s['chunks'])} chunks, complete={s['complete']}, cut={s['cut_reason']}, "
                  f"trailers={s['trailers']})")


# Volatile values are replaced by placeholders before comparing two transcripts.
import re as _re
_VOLATILE_HEADERS = {"date", "x-etcd-cluster-id", "x-raft-index", "x-raft-term", "content-length"}
_TS = _re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"')
_UPTIME = _re.compile(r'"uptime":"[^"]*"')
_BIGNUM_KEYS = ("cluster_id", "member_id", "raft_term", "raftIndex", "raftAppliedIndex", "raftTerm",
                "leader", "dbSize", "dbSizeInUse", "hash", "ID", "token", "id", "memberID", "targetID", "lease")


def _norm_text(t):
    t = _TS.sub('"<time>"', t)
    t = _UPTIME.sub('"uptime":"<dur>"', t)
    for k in _BIGNUM_KEYS:
        t = _re.sub(r'"%s":"?[-0-9a-zA-Z.]+"?' % k, '"%s":"<%s>"' % (k, k), t)
    t = _re.sub(r'"ttl":\d+', '"ttl":<ttl>', t)
    t = _re.sub(r'"TTL":"\d+"', '"TTL":"<ttl>"', t)
    return t


def normalise(o):
    r = o.get("response", {})
    if "status" not in r:
        return ("noresp",)
    hdr = sorted((k.lower(), "<v>" if k.lower() in _VOLATILE_HEADERS else v) for k, v in r["headers"])
    return (r["status"], tuple(hdr), _norm_text(r["body"]))


def diff(golden_path, other_path):
    """Compare two transcripts exchange by exchange (same scenario/seq), volatile values masked.
    Absolute store indices / revisions are compared as-is: they only match if the implementation
    replays etcd's internal writes (see v2.md 2.1). Use --loose to mask all numbers."""
    def load(p):
        d = {}
        for line in open(p):
            o = json.loads(line)
            if o.get("role") in ("main", "background"):
                d[(o["scenario"], o["seq"])] = o
        return d
    g, x = load(golden_path), load(other_path)
    bad = 0
    for key in sorted(g):
        if key not in x:
            print(f"MISSING {key}")
            bad += 1
            continue
        a, b = normalise(g[key]), normalise(x[key])
        if LOOSE:
            a = _re.sub(r"\d+", "N", repr(a))
            b = _re.sub(r"\d+", "N", repr(b))
        if a != b:
            bad += 1
            q = g[key]["request"]
            print(f"DIFF {key[0]}#{key[1]} {q['method']} {q['target'][:100]}")
            print(f"   etcd: {str(a)[:600]}")
            print(f"   impl: {str(b)[:600]}")
    print(f"{len(g)} exchanges compared, {bad} differ")
    return bad


LOOSE = False

# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES))
    ap.add_argument("--show", metavar="JSONL", help="pretty-print a transcript (use --only for scenario prefixes)")
    ap.add_argument("--diff", nargs=2, metavar=("GOLDEN", "OTHER"), help="compare two transcripts")
    ap.add_argument("--loose", action="store_true", help="with --diff: mask every number")
    ap.add_argument("--endpoint", default="http://127.0.0.1:42379")
    ap.add_argument("--endpoints", default="", help="comma separated list (cluster suite)")
    ap.add_argument("--out", default="-")
    ap.add_argument("--only", default="", help="comma separated scenario names")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.show:
        show(args.show, [p for p in args.only.split(",") if p])
        return
    if args.diff:
        global LOOSE
        LOOSE = args.loose
        sys.exit(1 if diff(*args.diff) else 0)
    if not args.suite:
        ap.error("--suite is required")
    scns = SUITES[args.suite]
    if args.list:
        for name, desc, _fn in scns:
            print(f"{name}\t{desc}")
        return
    if args.only:
        want = set(args.only.split(","))
        scns = [s for s in scns if s[0] in want]
    eps = [args.endpoint] + [e for e in args.endpoints.split(",") if e and e != args.endpoint]
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    rec = Recorder(args.suite, out, eps)
    for name, desc, fn in scns:
        rec.start(name, desc)
        try:
            fn(rec)
        except Exception as e:  # keep going; the failure is part of the record
            rec._emit({"suite": args.suite, "scenario": name, "role": "recorder-error", "error": repr(e)})
            print(f"scenario {name}: recorder error {e!r}", file=sys.stderr)
        print(f"{name}: done", file=sys.stderr)
    print(f"{len(rec.scenarios_run)} scenarios, {rec.count_exchanges} lines", file=sys.stderr)
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
