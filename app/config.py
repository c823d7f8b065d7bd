"""Config: everything etcdpy takes from its command line, as one frozen value; plus validation.

No I/O here. `app.cli` turns argv, ETCD_* variables and --config-file into a Config; this module
holds the typed result, the value parsers that copy Go's (strconv, time.ParseDuration,
net/url + etcd's types.NewURLs), and `validate`, which checks a Config the way etcd 3.4 does
(embed.Config.Validate plus the bootstrap checks of etcdserver.ServerConfig.VerifyBootstrap).

Differences from etcd 3.4.23, on purpose:
- `enable_v2` defaults to True (etcd: false); `--enable-v2=false` turns the v2 API off.
- an unknown --log-level is a ConfigError (etcd panics).
- listen URLs must be plain http: TLS and unix sockets are not supported yet (UnsupportedError).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_NAME = "default"
DEFAULT_LISTEN_PEER_URL = "http://localhost:2380"
DEFAULT_LISTEN_CLIENT_URL = "http://localhost:2379"
DEFAULT_INITIAL_CLUSTER = "default=http://localhost:2380"
MAX_ELECTION_MS = 50000
LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")
LOGGERS = ("capnslog", "zap")
CLUSTER_STATES = ("new", "existing")
COMPACTION_MODES = ("periodic", "revision")
URL_SCHEMES = ("http", "https", "unix", "unixs")


class ConfigError(Exception):
    """A bad flag value or a combination etcd refuses; the message is etcd's where etcd has one."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint  # an extra line etcd prints after the error, e.g. for missing advertise URLs


class BootstrapError(ConfigError):
    """An --initial-cluster problem; etcd finds these when it bootstraps, not as a flag error."""


class UnsupportedError(ConfigError):
    """A valid etcd setting that etcdpy cannot honour yet (TLS, discovery, proxy, ...)."""


@dataclass(frozen=True, slots=True)
class Config:
    """The settings etcdpy uses. Field defaults are etcd 3.4's, except `enable_v2`.

    `data_dir` "" means f"{name}.etcd" and an empty `initial_cluster` means
    "this member alone at its advertised peer URLs"; both are filled in on construction, so
    `Config()` equals `app.cli.parse([], {})`.
    """

    # member
    name: str = DEFAULT_NAME
    data_dir: str = ""
    wal_dir: str = ""
    snapshot_count: int = 100000
    snapshot_catchup_entries: int = 5000
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    initial_election_tick_advance: bool = True
    listen_peer_urls: tuple[str, ...] = (DEFAULT_LISTEN_PEER_URL,)
    listen_client_urls: tuple[str, ...] = (DEFAULT_LISTEN_CLIENT_URL,)
    max_snapshots: int = 5
    max_wals: int = 5
    quota_backend_bytes: int = 0
    max_txn_ops: int = 128
    max_request_bytes: int = 1572864
    # clustering
    initial_advertise_peer_urls: tuple[str, ...] = (DEFAULT_LISTEN_PEER_URL,)
    initial_cluster: tuple[tuple[str, str], ...] = ()
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    advertise_client_urls: tuple[str, ...] = (DEFAULT_LISTEN_CLIENT_URL,)
    strict_reconfig_check: bool = True
    pre_vote: bool = False
    auto_compaction_retention: str = "0"
    auto_compaction_mode: str = "periodic"
    enable_v2: bool = True
    enable_grpc_gateway: bool = True
    # security (only the parts that need no TLS)
    cors: tuple[str, ...] = ("*",)
    host_whitelist: tuple[str, ...] = ("*",)
    # auth
    auth_token: str = "simple"
    bcrypt_cost: int = 10
    auth_token_ttl: int = 300
    # logging
    logger: str = "capnslog"
    log_outputs: tuple[str, ...] = ("default",)
    log_level: str = "info"
    # unsafe
    force_new_cluster: bool = False
    unsafe_no_fsync: bool = False
    unsafe_test_faults: bool = False  # not an etcd flag: enables app/faults.py for process tests
    # not an etcd flag: the client port's HTTP server, from ETCDPY_HTTP_SERVER ("lean": app.httpserver)
    http_server: str = "lean"
    # where the settings came from ("" = flags and environment)
    config_file: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.data_dir == "":
            object.__setattr__(self, "data_dir", f"{self.name}.etcd")
        if not self.initial_cluster:
            object.__setattr__(self, "initial_cluster", initial_cluster_from_name(self))

    @property
    def member_dir(self) -> str:
        return f"{self.data_dir}/member"

    @property
    def effective_wal_dir(self) -> str:
        """etcd ServerConfig.WALDir: the dedicated wal dir, else data-dir/member/wal."""
        return self.wal_dir or f"{self.member_dir}/wal"

    @property
    def snap_dir(self) -> str:
        return f"{self.member_dir}/snap"

    @property
    def election_ticks(self) -> int:
        return self.election_timeout_ms // self.heartbeat_interval_ms

    @property
    def request_timeout_s(self) -> float:
        """etcd ReqTimeout: 5 s + 2 x election timeout."""
        return 5.0 + 2 * self.election_ticks * self.heartbeat_interval_ms / 1000

    def peer_urls_of(self, name: str) -> tuple[str, ...]:
        """The peer URLs --initial-cluster gives `name`, sorted as etcd's URLsMap keeps them."""
        return tuple(sorted(u for n, u in self.initial_cluster if n == name))

    def compaction_retention(self) -> int:
        """Retention as etcd's parseCompactionRetention: revisions, or nanoseconds (periodic).

        A bare integer means hours in periodic mode and revisions in revision mode; anything
        else must be a Go duration. Raises ConfigError like etcd does at start.
        """
        return parse_compaction_retention(self.auto_compaction_mode, self.auto_compaction_retention)


def initial_cluster_from_name(cfg: Config) -> tuple[tuple[str, str], ...]:
    """etcd Config.InitialClusterFromName: this member at each of its advertised peer URLs."""
    name = cfg.name or DEFAULT_NAME
    return tuple((name, u) for u in cfg.initial_advertise_peer_urls)


# ---------------------------------------------------------------------------------------------
# Go value parsers. Each raises ValueError whose text is what Go's flag package would report.

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
PARSE_ERROR = "parse error"
RANGE_ERROR = "value out of range"


def parse_go_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in _GO_TRUE:
        return True
    if s in _GO_FALSE:
        return False
    raise ValueError(PARSE_ERROR)


def _underscore_ok(s: str) -> bool:
    """strconv.underscoreOK: '_' only between digits (a base prefix counts as a digit)."""
    saw = "^"  # ^ start, 0 digit or prefix, _ underscore, ! other
    i = 0
    if len(s) >= 1 and s[0] in "+-":
        s = s[1:]
    hex_ = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "bxo":
        i = 2
        saw = "0"
        hex_ = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if c.isdigit() or (hex_ and c.lower() in "abcdef"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_go_int(s: str, *, bits: int = 64, signed: bool = False, base: int = 0) -> int:
    """strconv.ParseInt / ParseUint. Errors: "parse error" (syntax) or "value out of range"."""
    body = s
    neg = False
    if signed and body[:1] in ("+", "-"):
        neg = body[0] == "-"
        body = body[1:]
    if not body:
        raise ValueError(PARSE_ERROR)
    b = base
    digits = body
    if base == 0:
        b = 10
        if body[0] == "0":
            if len(body) >= 3 and body[1].lower() == "x":
                b, digits = 16, body[2:]
            elif len(body) >= 3 and body[1].lower() == "o":
                b, digits = 8, body[2:]
            elif len(body) >= 3 and body[1].lower() == "b":
                b, digits = 2, body[2:]
            else:
                b, digits = 8, body[1:] or "0"
        if "_" in body:
            if not _underscore_ok(body):
                raise ValueError(PARSE_ERROR)
            digits = digits.replace("_", "")
    if not digits:
        raise ValueError(PARSE_ERROR)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"[:b]
    if any(c not in alphabet for c in digits.lower()):
        raise ValueError(PARSE_ERROR)
    value = int(digits, b)
    if neg:
        value = -value
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise ValueError(RANGE_ERROR)
    return value


_UNITS_NS = {
    "ns": 1,
    "us": 1000,
    "µs": 1000,
    "μs": 1000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_go_duration(s: str) -> int:
    """time.ParseDuration, in nanoseconds. Errors carry Go's text ("time: invalid duration ...")."""
    orig = s
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        assert m is not None  # the pattern can match the empty string
        number, unit = m.group(1), m.group(2)
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{orig}"')
        if unit == "":
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _UNITS_NS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(number) * _UNITS_NS[unit]
        pos = m.end()
    if total > (1 << 63) - 1:
        raise ValueError(f'time: invalid duration "{orig}"')
    return -int(total) if neg else int(total)


def split_host_port(hostport: str) -> tuple[str, str]:
    """net.SplitHostPort."""
    i = hostport.rfind(":")
    if i < 0:
        raise ValueError(f"address {hostport}: missing port in address")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"address {hostport}: missing ']' in address")
        if end + 1 == len(hostport):
            raise ValueError(f"address {hostport}: missing port in address")
        if end + 1 != i:
            what = "too many colons" if hostport[end + 1] == ":" else "missing port"
            raise ValueError(f"address {hostport}: {what} in address")
        host = hostport[1:end]
        if "[" in hostport[1:] or "]" in hostport[end + 1 :]:
            raise ValueError(f"address {hostport}: unexpected '[' or ']' in address")
    else:
        host = hostport[:i]
        if ":" in host:
            raise ValueError(f"address {hostport}: too many colons in address")
        if "[" in hostport or "]" in hostport:
            raise ValueError(f"address {hostport}: unexpected '[' or ']' in address")
    return host, hostport[i + 1 :]


def _host_of(url: str) -> str:
    """The u.Host part of a URL (netloc without user info)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def parse_url(s: str) -> str:
    """One URL as etcd's types.NewURLs accepts it; returns it trimmed."""
    s = s.strip()
    try:
        parts = urlsplit(s)
    except ValueError as exc:
        raise ValueError(f'parse "{s}": {exc}') from None
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {s}")
    try:
        split_host_port(parts.netloc.rpartition("@")[2])
    except ValueError:
        raise ValueError(f'URL address does not have the form "host:port": {s}') from None
    if parts.path != "":
        raise ValueError(f"URL must not contain a path: {s}")
    return s


def parse_urls(s: str) -> tuple[str, ...]:
    """types.NewURLs(strings.Split(s, ",")): every entry a URL; sorted, duplicates kept once."""
    return tuple(sorted({parse_url(part) for part in s.split(",")}))


def parse_initial_cluster(s: str) -> tuple[tuple[str, str], ...]:
    """types.NewURLsMap: "name=url,name=url"; several URLs per name allowed. Sorted by name, URL."""
    pairs: list[tuple[str, str]] = []
    for item in s.split(","):
        if item == "":
            continue
        name, _, url = item.partition("=")
        pairs.append((name, parse_url(url)))
    return tuple(sorted(pairs))


def format_initial_cluster(pairs: Iterable[tuple[str, str]]) -> str:
    """URLsMap.String(): "name=url" pairs, sorted, comma separated."""
    return ",".join(sorted(f"{n}={u}" for n, u in pairs))


def parse_compaction_retention(mode: str, retention: str) -> int:
    """etcd embed.parseCompactionRetention: revisions, or nanoseconds for periodic mode."""
    retention = retention or "0"
    if re.fullmatch(r"[+-]?[0-9]+", retention) and int(retention) >= 0:
        h = int(retention)
        return h * 3_600_000_000_000 if mode == "periodic" else h
    try:
        return parse_go_duration(retention)
    except ValueError as exc:
        raise ConfigError(f"error parsing CompactionRetention: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Validation, in etcd's order: embed.Config.Validate, then the bootstrap checks.


def _check_bind_urls(urls: Iterable[str]) -> None:
    """embed.checkBindURLs: listen URLs need an IP address (or localhost)."""
    for url in urls:
        if urlsplit(url).scheme in ("unix", "unixs"):
            continue
        host, _ = split_host_port(_host_of(url))
        if host == "localhost":
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"expected IP in URL for binding ({url})") from None


def _check_host_urls(flag: str, urls: tuple[str, ...]) -> None:
    """embed.checkHostURLs: advertised URLs need a host."""
    for url in urls:
        try:
            host, _ = split_host_port(_host_of(url))
            problem = "" if host else f"unexpected empty host ({url})"
        except ValueError as exc:
            problem = str(exc)
        if problem:
            raise ConfigError(f'{flag} "{",".join(urls)}" must be "host:port" ({problem})')


def _check_url_values(flag: str, urls: Iterable[str]) -> None:
    for url in urls:
        try:
            parse_url(url)
        except ValueError as exc:
            raise ConfigError(f'invalid value "{url}" for {flag}: {exc}') from None


def _check_logging(cfg: Config) -> None:
    """embed.Config.setupLogging's checks."""
    if cfg.logger not in LOGGERS:
        raise ConfigError(f'unknown logger option "{cfg.logger}"')
    if cfg.logger == "capnslog":
        if len(cfg.log_outputs) != 1:
            got = " ".join(f'"{o}"' for o in cfg.log_outputs)
            raise ConfigError(f"--logger=capnslog supports only 1 value in '--log-outputs', got [{got}]")
        if cfg.log_outputs[0] not in ("default", "stderr", "stdout"):
            raise ConfigError(
                f'unknown log-output "{cfg.log_outputs[0]}" (only supports "default", "stderr", "stdout")'
            )
    elif len(cfg.log_outputs) > 1 and "default" in cfg.log_outputs:
        raise ConfigError('multi logoutput for "default" is not supported yet')
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(
            f'unknown level "{cfg.log_level}" (--log-level only supports debug, info, warn, error, panic, or fatal)'
        )


def _check_bootstrap(cfg: Config) -> None:
    """etcdserver VerifyBootstrap / VerifyJoinExisting, which etcd runs before its first start."""
    mine = cfg.peer_urls_of(cfg.name)
    if not mine:
        raise BootstrapError(f'couldn\'t find local name "{cfg.name}" in the initial cluster configuration')
    if cfg.initial_cluster_state == "new":
        advertised = tuple(sorted(cfg.initial_advertise_peer_urls))
        if advertised != mine:
            missing = [u for u in mine if u not in advertised]
            if missing:
                mstr = ",".join(f"{cfg.name}={u}" for u in missing)
                if len(advertised) != len(mine):
                    why = f"len({_go_quote_list(advertised)}) != len({_go_quote_list(mine)})"
                else:
                    why = f'resolved urls: "{",".join(advertised)}" != "{",".join(mine)}"'
                raise BootstrapError(
                    f"--initial-cluster has {mstr} but missing from "
                    f"--initial-advertise-peer-urls={','.join(advertised)} ({why})"
                )
            extra = ",".join(u for u in advertised if u not in mine)
            mine_str = format_initial_cluster((cfg.name, u) for u in advertised)
            raise BootstrapError(
                f"--initial-advertise-peer-urls has {extra} but missing from --initial-cluster={mine_str}"
            )
    urls = [u for _, u in cfg.initial_cluster]
    if len(set(urls)) != len(urls):
        raise BootstrapError(
            f"initial cluster {format_initial_cluster(cfg.initial_cluster)} has duplicate url"
        )


def _go_quote_list(items: Iterable[str]) -> str:
    return "[" + " ".join(f'"{i}"' for i in items) + "]"


def validate(cfg: Config) -> Config:
    """Check `cfg` as etcd 3.4 checks its flags before starting; returns it, or raises ConfigError.

    Listen URLs must be plain http for etcdpy (UnsupportedError otherwise).
    """
    _check_logging(cfg)
    for flag, urls in (
        ("--listen-peer-urls", cfg.listen_peer_urls),
        ("--listen-client-urls", cfg.listen_client_urls),
        ("--initial-advertise-peer-urls", cfg.initial_advertise_peer_urls),
        ("--advertise-client-urls", cfg.advertise_client_urls),
    ):
        _check_url_values(flag, urls)
    _check_url_values("--initial-cluster", (u for _, u in cfg.initial_cluster))
    _check_url_values("--cors", (u for u in cfg.cors if u != "*"))
    _check_bind_urls(cfg.listen_peer_urls)
    _check_bind_urls(cfg.listen_client_urls)
    _check_host_urls("--initial-advertise-peer-urls", cfg.initial_advertise_peer_urls)
    _check_host_urls("--advertise-client-urls", cfg.advertise_client_urls)
    if cfg.initial_cluster_state not in CLUSTER_STATES:
        raise ConfigError(f'unexpected clusterState "{cfg.initial_cluster_state}"')
    for what, n in (
        ("--snapshot-count", cfg.snapshot_count),
        ("--max-snapshots", cfg.max_snapshots),
        ("--max-wals", cfg.max_wals),
        ("--max-txn-ops", cfg.max_txn_ops),
        ("--max-request-bytes", cfg.max_request_bytes),
        ("--bcrypt-cost", cfg.bcrypt_cost),
        ("--auth-token-ttl", cfg.auth_token_ttl),
    ):
        if n < 0:
            raise ConfigError(f"{what} must be >= 0 (set to {n})")
    if cfg.heartbeat_interval_ms <= 0:
        raise ConfigError(f"--heartbeat-interval must be >0 (set to {cfg.heartbeat_interval_ms}ms)")
    if cfg.election_timeout_ms <= 0:
        raise ConfigError(f"--election-timeout must be >0 (set to {cfg.election_timeout_ms}ms)")
    if 5 * cfg.heartbeat_interval_ms > cfg.election_timeout_ms:
        raise ConfigError(
            f"--election-timeout[{cfg.election_timeout_ms}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{cfg.heartbeat_interval_ms}ms]"
        )
    if cfg.election_timeout_ms > MAX_ELECTION_MS:
        raise ConfigError(
            f"--election-timeout[{cfg.election_timeout_ms}ms] is too long, and should be set less than "
            f"{MAX_ELECTION_MS}ms"
        )
    if cfg.listen_client_urls and not cfg.advertise_client_urls:
        raise ConfigError(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
            hint="When listening on specific address(es), this etcd process must advertise "
            "accessible url(s) to each connected client.",
        )
    if cfg.auto_compaction_mode not in ("", *COMPACTION_MODES):
        raise ConfigError(f'unknown auto-compaction-mode "{cfg.auto_compaction_mode}"')
    cfg.compaction_retention()
    for flag, urls in (
        ("--listen-client-urls", cfg.listen_client_urls),
        ("--listen-peer-urls", cfg.listen_peer_urls),
    ):
        for url in urls:
            if urlsplit(url).scheme != "http":
                raise UnsupportedError(
                    f"{flag} {url}: only http:// URLs are supported yet (no TLS, no unix sockets)"
                )
    if not _has_wal(cfg):
        # etcd checks the bootstrap flags only on a member's first start: afterwards the data
        # dir knows the member and the cluster, and --initial-cluster* are ignored
        _check_bootstrap(cfg)
    return cfg


def _has_wal(cfg: Config) -> bool:
    wal_dir = Path(cfg.wal_dir) if cfg.wal_dir else Path(cfg.data_dir) / "member" / "wal"
    try:
        return any(p.suffix == ".wal" for p in wal_dir.iterdir())
    except OSError:
        return False
