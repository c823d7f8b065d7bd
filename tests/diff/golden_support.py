"""Replay record.py suites against a live server and compare with the golden etcd transcripts."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.diff import record as _record
from tests.support.normalize import (
    Difference,
    NormContext,
    compare,
    normalize_exchange,
    pretty,
)

record: Any = _record  # spec tooling copied verbatim, untyped

GOLDEN_DIR = Path(__file__).parent / "golden"

Record = dict[str, Any]
# scenario -> [(exchange seq, field path or fnmatch pattern, reason)]
Accepted = Mapping[str, Sequence[tuple[int, str, str]]]


@dataclass
class Scenario:
    name: str
    description: str = ""
    exchanges: dict[int, Record] = field(default_factory=dict)  # seq -> main/background record
    errors: list[str] = field(default_factory=list)  # recorder-error lines


def load_transcript(path: Path) -> dict[str, Scenario]:
    """Scenarios of a JSONL transcript, in file order."""
    out: dict[str, Scenario] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            name = o.get("scenario")
            if name is None:
                continue
            scn = out.setdefault(name, Scenario(name))
            role = o.get("role")
            if role == "scenario":
                scn.description = o.get("description", "")
            elif role in ("main", "background"):
                scn.exchanges[o["seq"]] = o
            elif role == "recorder-error":
                scn.errors.append(o.get("error", "?"))
    return out


def replay(suite: str, endpoints: Sequence[str], names: Iterable[str], out_path: Path) -> dict[str, Scenario]:
    """Run record.py's scenarios ``names`` (in the suite's own order) and load the transcript."""
    wanted = set(names)
    unknown = wanted - {n for n, _d, _f in record.SUITES[suite]}
    if unknown:
        raise ValueError(f"unknown {suite} scenarios: {sorted(unknown)}")
    with open(out_path, "w", encoding="utf-8") as out:
        rec = record.Recorder(suite, out, list(endpoints))
        for name, desc, fn in record.SUITES[suite]:
            if name not in wanted:
                continue
            rec.start(name, desc)
            try:
                fn(rec)
            except Exception as e:  # the failure is part of the record, like record.py's main()
                rec._emit({"suite": suite, "scenario": name, "role": "recorder-error", "error": repr(e)})
    return load_transcript(out_path)


def _target(rec: Record) -> str:
    q = rec.get("request") or {}
    return f"{q.get('method')} {q.get('target')}"


@dataclass
class ExchangeDiff:
    seq: int
    golden: Record
    actual: Record | None
    diffs: list[Difference]


def diff_scenario(
    golden: Scenario,
    actual: Scenario | None,
    gctx: NormContext,
    actx: NormContext,
    *,
    normalize_targets: bool = False,
) -> list[ExchangeDiff]:
    """Differences per exchange.  ``normalize_targets``: compare request targets after each
    context's substitutions (cluster transcripts put volatile member IDs in paths)."""
    out: list[ExchangeDiff] = []
    for seq in sorted(golden.exchanges):
        g = golden.exchanges[seq]
        a = actual.exchanges.get(seq) if actual is not None else None
        if a is None:
            out.append(ExchangeDiff(seq, g, None, [Difference("exchange", _target(g), "<missing>")]))
            continue
        diffs: list[Difference] = []
        gt, at = _target(g), _target(a)
        if normalize_targets:
            gt, at = gctx.sub(gt), actx.sub(at)
        if gt != at:
            # requests are computed from earlier answers (indices); say so, it explains the rest
            diffs.append(Difference("request", gt, at))
        diffs += compare(normalize_exchange(g, gctx), normalize_exchange(a, actx))
        if diffs:
            out.append(ExchangeDiff(seq, g, a, diffs))
    if actual is not None:
        for seq in sorted(set(actual.exchanges) - set(golden.exchanges)):
            a = actual.exchanges[seq]
            out.append(ExchangeDiff(seq, a, a, [Difference("exchange", "<not in golden>", _target(a))]))
    return out


def check_scenario(
    golden: Scenario,
    actual: Scenario | None,
    gctx: NormContext,
    actx: NormContext,
    accepted: Sequence[tuple[int, str, str]] = (),
    *,
    golden_label: str = "golden",
    show_full: int = 1,
    normalize_targets: bool = False,
) -> str | None:
    """None if the scenario matches (modulo ``accepted``), else a readable report."""
    lines: list[str] = []
    if actual is None:
        return f"{golden.name}: not replayed (no exchanges recorded for it)"
    if actual.errors:
        lines.append(f"recorder error(s) while replaying: {actual.errors}")
    used: set[int] = set()
    remaining: list[ExchangeDiff] = []
    for ed in diff_scenario(golden, actual, gctx, actx, normalize_targets=normalize_targets):
        keep = []
        for d in ed.diffs:
            hit = next(
                (
                    i
                    for i, (seq, pat, _why) in enumerate(accepted)
                    if seq == ed.seq and fnmatch.fnmatchcase(d.path, pat)
                ),
                None,
            )
            if hit is None:
                keep.append(d)
            else:
                used.add(hit)
        if keep:
            remaining.append(ExchangeDiff(ed.seq, ed.golden, ed.actual, keep))
    stale = [a for i, a in enumerate(accepted) if i not in used]
    if remaining:
        lines.append(f"{len(remaining)} exchange(s) differ from {golden_label} (volatile fields masked):")
    for n, ed in enumerate(remaining):
        note = ed.golden.get("note") or ""
        role = " (background)" if ed.golden.get("role") == "background" else ""
        lines.append(f"  #{ed.seq}{role} {_target(ed.golden)[:160]}" + (f"   # {note}" if note else ""))
        for d in ed.diffs[:20]:
            lines.append(f"      {d.render()}")
            if d.path == "body_format" and d.actual == "text" and str(d.expected).startswith("json"):
                lines.append(
                    "        (the body is not byte-identical to Go's encoding/json output: spacing, escaping, newline)"
                )
        if len(ed.diffs) > 20:
            lines.append(f"      ... {len(ed.diffs) - 20} more")
        if n < show_full and ed.actual is not None:
            lines.append("      --- expected (etcd, normalised):")
            lines.append(_indent(pretty(normalize_exchange(ed.golden, gctx)), 8))
            lines.append("      --- actual (normalised):")
            lines.append(_indent(pretty(normalize_exchange(ed.actual, actx)), 8))
    for seq, pat, why in stale:
        lines.append(f"  ACCEPTED_DIFFERENCES entry no longer occurs, remove it: ({seq}, {pat!r}, {why!r})")
    if not lines:
        return None
    return f"{golden.name}: " + "\n".join(lines)


def _indent(s: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in s.splitlines())


def validate_accepted(accepted: Accepted, golden: Mapping[str, Scenario]) -> list[str]:
    problems = []
    for scn, entries in accepted.items():
        if scn not in golden:
            problems.append(f"ACCEPTED_DIFFERENCES names unknown scenario {scn!r}")
            continue
        for seq, _pat, why in entries:
            if seq not in golden[scn].exchanges:
                problems.append(f"ACCEPTED_DIFFERENCES[{scn!r}] names unknown exchange seq {seq}")
            if not why.strip():
                problems.append(f"ACCEPTED_DIFFERENCES[{scn!r}] seq {seq}: a reason is required")
    return problems


class RewritingRecorder(record.Recorder):  # type: ignore[misc]
    """record.Recorder that puts the live server's member URLs where the recording has its own."""

    def __init__(self, suite: str, out: Any, endpoints: list[str], urls: Mapping[str, str]) -> None:
        super().__init__(suite, out, endpoints)
        self.urls = dict(urls)

    def _rewrite(self, v: Any) -> Any:
        if isinstance(v, str):
            for old, new in self.urls.items():
                v = v.replace(old, new)
            return v
        if isinstance(v, list):
            return [self._rewrite(x) for x in v]
        if isinstance(v, dict):
            return {k: self._rewrite(x) for k, x in v.items()}
        return v

    def _build(self, method: str, path: str, **kw: Any) -> Any:
        if kw.get("json_body") is not None:
            kw["json_body"] = self._rewrite(kw["json_body"])
        return super()._build(method, path, **kw)
