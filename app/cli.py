"""etcd 3.4's command line for etcdpy: flags, ETCD_* environment variables, --config-file.

`parse(argv, env)` reads arguments the way Go's `flag` package does for etcd
(`-f v`, `-f=v`, `--f v`, `--f=v`; a bool flag never takes the next argument; the last
occurrence wins; the first non-flag argument ends the flags and is an error), fills the
flags not given from `ETCD_<FLAG>` variables, and returns a validated `app.config.Config`.

Every flag etcd 3.4.23 defines is accepted by name. Each has one of four fates (`Fate`):
- "use":    it sets a Config field;
- "refuse": etcdpy cannot honour it yet (TLS, discovery, proxy, pprof, metrics URLs, v2v3);
            giving it a non-default value stops the start with "--flag is not supported yet";
- "ignore": it only tunes etcd internals that etcdpy does not have (bbolt batching, gRPC
            keepalives, corruption checks, metrics detail, capnslog package levels, ...): the
            value is parsed and checked like etcd does, then dropped;
- "legacy": the pre-3.0 names etcd itself ignores with a warning (features.md P46).

Exit behaviour copies etcd 3.4.23 (checked against /usr/bin/etcd): a flag syntax or value error
prints Go's message and the usage to stderr and exits 2; everything found later (positional
arguments, ETCD_* values, cross-flag checks) exits 1; --help prints the usage to stderr and the
flag list to stdout and exits 0; --version prints to stdout and exits 0.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.config import (
    DEFAULT_INITIAL_CLUSTER,
    DEFAULT_LISTEN_CLIENT_URL,
    DEFAULT_LISTEN_PEER_URL,
    DEFAULT_NAME,
    BootstrapError,
    Config,
    ConfigError,
    UnsupportedError,
    parse_go_bool,
    parse_go_duration,
    parse_go_int,
    parse_initial_cluster,
    parse_urls,
    validate,
)
from app.version import ETCD_VERSION, ETCDPY_VERSION

Kind = Literal[
    "string",
    "bool",
    "uint",
    "int",
    "uint32",
    "duration",
    "urls",
    "cors",
    "ustrings",
    "strings",
    "choice",
    "legacy",
]
Fate = Literal["use", "refuse", "ignore", "legacy"]
Value = str | bool | int | tuple[str, ...]
Warn = Callable[[str], None]

ENV_PREFIX = "ETCD"
# etcd 3.4 (pkg/flags.verifyEnv) refuses to start when an ETCD_<FLAG> variable is set for a flag
# also given on the command line ("conflicting environment variable ... is shadowed"); set this to
# False to let the command line win silently instead.
ENV_SHADOWED_IS_ERROR = True


class ExitRequest(Exception):  # not an error: --help and --version end the process
    """Stop before starting: print `stdout` and `stderr` as they are, exit with `code`."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


class FlagError(ConfigError):
    """What Go's flag package rejects while parsing argv: etcd prints it plus the usage, exit 2."""


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    default: str  # as Go's flag default; parsed with the flag's own parser
    fate: Fate
    help: str = ""
    section: str = ""  # "" = not shown by --help (etcd does not list it either)
    shown: str | None = None  # the default as --help shows it, when not `default`
    choices: tuple[str, ...] = ()


# fmt: off
def _f(name: str, kind: Kind, default: str, fate: Fate, help: str = "", section: str = "",
       shown: str | None = None, choices: tuple[str, ...] = ()) -> Flag:
    return Flag(name, kind, default, fate, help, section, shown, choices)


M, C, S, A, P, L, X, E, U = ("Member", "Clustering", "Security", "Auth", "Profiling and Monitoring",
                             "Logging", "v2 Proxy (to be deprecated in v4)", "Experimental feature",
                             "Unsafe feature")

# Every flag of etcd 3.4.23 (etcdmain/config.go), in `etcd --help` order; help texts are etcd's.
FLAGS: tuple[Flag, ...] = (
    _f("name", "string", DEFAULT_NAME, "use", "Human-readable name for this member.", M),
    _f("data-dir", "string", "", "use", "Path to the data directory.", M, shown="${name}.etcd"),
    _f("wal-dir", "string", "", "use", "Path to the dedicated wal directory.", M),
    _f("snapshot-count", "uint", "100000", "use",
       "Number of committed transactions to trigger a snapshot to disk.", M),
    _f("heartbeat-interval", "uint", "100", "use", "Time (in milliseconds) of a heartbeat interval.", M),
    _f("election-timeout", "uint", "1000", "use",
       "Time (in milliseconds) for an election to timeout. See tuning documentation for details.", M),
    _f("initial-election-tick-advance", "bool", "true", "use",
       "Whether to fast-forward initial election ticks on boot for faster election.", M),
    _f("listen-peer-urls", "urls", DEFAULT_LISTEN_PEER_URL, "use",
       "List of URLs to listen on for peer traffic.", M),
    _f("listen-client-urls", "urls", DEFAULT_LISTEN_CLIENT_URL, "use",
       "List of URLs to listen on for client traffic.", M),
    _f("max-snapshots", "uint", "5", "use", "Maximum number of snapshot files to retain (0 is unlimited).", M),
    _f("max-wals", "uint", "5", "use", "Maximum number of wal files to retain (0 is unlimited).", M),
    _f("quota-backend-bytes", "int", "0", "use",
       "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).", M),
    _f("backend-batch-interval", "duration", "0s", "ignore",
       "BackendBatchInterval is the maximum time before commit the backend transaction.", M, shown=""),
    _f("backend-batch-limit", "int", "0", "ignore",
       "BackendBatchLimit is the maximum operations before commit the backend transaction.", M),
    _f("max-txn-ops", "uint", "128", "use", "Maximum number of operations permitted in a transaction.", M),
    _f("max-request-bytes", "uint", "1572864", "use",
       "Maximum client request size in bytes the server will accept.", M),
    _f("max-concurrent-streams", "uint32", "4294967295", "ignore",
       "Maximum concurrent streams that each client can open at a time.", M, shown="math.MaxUint32"),
    _f("grpc-keepalive-min-time", "duration", "5s", "ignore",
       "Minimum duration interval that a client should wait before pinging server.", M),
    _f("grpc-keepalive-interval", "duration", "2h", "ignore",
       "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).", M),
    _f("grpc-keepalive-timeout", "duration", "20s", "ignore",
       "Additional duration of wait before closing a non-responsive connection (0 to disable).", M),
    _f("initial-advertise-peer-urls", "urls", DEFAULT_LISTEN_PEER_URL, "use",
       "List of this member's peer URLs to advertise to the rest of the cluster.", C),
    _f("initial-cluster", "string", DEFAULT_INITIAL_CLUSTER, "use",
       "Initial cluster configuration for bootstrapping.", C),
    _f("initial-cluster-state", "choice", "new", "use", "Initial cluster state ('new' or 'existing').", C,
       choices=("new", "existing")),
    _f("initial-cluster-token", "string", "etcd-cluster", "use",
       "Initial cluster token for the etcd cluster during bootstrap.\n"
       "Specifying this can protect you from unintended cross-cluster interaction when running "
       "multiple clusters.", C),
    _f("advertise-client-urls", "urls", DEFAULT_LISTEN_CLIENT_URL, "use",
       "List of this member's client URLs to advertise to the public.\n"
       "The client URLs advertised should be accessible to machines that talk to etcd cluster. "
       "etcd client libraries parse these URLs to connect to the cluster.", C),
    _f("discovery", "string", "", "refuse", "Discovery URL used to bootstrap the cluster.", C),
    _f("discovery-fallback", "choice", "proxy", "ignore",
       "Expected behavior ('exit' or 'proxy') when discovery services fails.\n"
       '"proxy" supports v2 API only.', C, choices=("proxy", "exit")),
    _f("discovery-proxy", "string", "", "refuse", "HTTP proxy to use for traffic to discovery service.", C),
    _f("discovery-srv", "string", "", "refuse", "DNS srv domain used to bootstrap the cluster.", C),
    _f("discovery-srv-name", "string", "", "refuse",
       "Suffix to the dns srv name queried when bootstrapping.", C),
    _f("strict-reconfig-check", "bool", "true", "use",
       "Reject reconfiguration requests that would cause quorum loss.", C),
    _f("pre-vote", "bool", "false", "use", "Enable to run an additional Raft election phase.", C),
    _f("auto-compaction-retention", "string", "0", "use",
       "Auto compaction retention length. 0 means disable auto compaction.", C),
    _f("auto-compaction-mode", "string", "periodic", "use",
       "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based "
       "retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision "
       "number based retention.", C),
    _f("enable-v2", "bool", "true", "use",
       "Accept etcd V2 client requests. (etcdpy: default true; etcd 3.4's is false)", C),
    _f("enable-grpc-gateway", "bool", "true", "use", "Enable GRPC gateway."),
    _f("cert-file", "string", "", "refuse", "Path to the client server TLS cert file.", S),
    _f("key-file", "string", "", "refuse", "Path to the client server TLS key file.", S),
    _f("client-cert-auth", "bool", "false", "refuse", "Enable client cert authentication.", S),
    _f("client-crl-file", "string", "", "refuse", "Path to the client certificate revocation list file.", S),
    _f("client-cert-allowed-hostname", "string", "", "refuse",
       "Allowed TLS hostname for client cert authentication.", S),
    _f("trusted-ca-file", "string", "", "refuse", "Path to the client server TLS trusted CA cert file.", S),
    _f("auto-tls", "bool", "false", "refuse", "Client TLS using generated certificates.", S),
    _f("peer-cert-file", "string", "", "refuse", "Path to the peer server TLS cert file.", S),
    _f("peer-key-file", "string", "", "refuse", "Path to the peer server TLS key file.", S),
    _f("peer-client-cert-auth", "bool", "false", "refuse", "Enable peer client cert authentication.", S),
    _f("peer-trusted-ca-file", "string", "", "refuse", "Path to the peer server TLS trusted CA file.", S),
    _f("peer-cert-allowed-cn", "string", "", "refuse",
       "Required CN for client certs connecting to the peer endpoint.", S),
    _f("peer-cert-allowed-hostname", "string", "", "refuse",
       "Allowed TLS hostname for inter peer authentication.", S),
    _f("peer-auto-tls", "bool", "false", "refuse",
       "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not "
       "provided.", S),
    _f("peer-crl-file", "string", "", "refuse", "Path to the peer certificate revocation list file.", S),
    _f("cipher-suites", "strings", "", "refuse",
       "Comma-separated list of supported TLS cipher suites between client/server and peers (empty will "
       "be auto-populated by Go).", S),
    _f("cors", "cors", "*", "use",
       "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing, (empty or * "
       "means allow all).", S),
    _f("host-whitelist", "ustrings", "*", "use",
       "Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow "
       "all).", S),
    _f("auth-token", "string", "simple", "use",
       "Specify a v3 authentication token type and its options ('simple' or 'jwt').", A),
    _f("bcrypt-cost", "uint", "10", "use",
       "Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid values are "
       "between 4 and 31.", A),
    _f("auth-token-ttl", "uint", "300", "use", "Time (in seconds) of the auth-token-ttl.", A),
    _f("enable-pprof", "bool", "false", "refuse",
       'Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"', P),
    _f("metrics", "string", "basic", "ignore",
       "Set level of detail for exported metrics, specify 'extensive' to include histogram metrics.", P),
    _f("listen-metrics-urls", "urls", "", "refuse",
       "List of URLs to listen on for the metrics and health endpoints.", P),
    _f("logger", "string", "capnslog", "use",
       "Specify 'zap' for structured logging or 'capnslog'. [WARN] 'capnslog' will be deprecated in "
       "v3.5.", L),
    _f("log-outputs", "ustrings", "default", "use",
       "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of "
       "comma separated output targets.", L),
    _f("log-output", "ustrings", "default", "use", "[TO BE DEPRECATED IN v3.5] use '--log-outputs'."),
    _f("log-level", "string", "info", "use",
       "Configures log level. Only supports debug, info, warn, error, panic, or fatal.", L),
    _f("proxy", "choice", "off", "refuse", "Proxy mode setting ('off', 'readonly' or 'on').", X,
       choices=("off", "readonly", "on")),
    _f("proxy-failure-wait", "uint", "5000", "ignore",
       "Time (in milliseconds) an endpoint will be held in a failed state.", X),
    _f("proxy-refresh-interval", "uint", "30000", "ignore",
       "Time (in milliseconds) of the endpoints refresh interval.", X),
    _f("proxy-dial-timeout", "uint", "1000", "ignore", "Time (in milliseconds) for a dial to timeout.", X),
    _f("proxy-write-timeout", "uint", "5000", "ignore", "Time (in milliseconds) for a write to timeout.", X),
    _f("proxy-read-timeout", "uint", "0", "ignore", "Time (in milliseconds) for a read to timeout.", X),
    _f("experimental-initial-corrupt-check", "bool", "false", "ignore",
       "Enable to check data corruption before serving any client/peer traffic.", E),
    _f("experimental-corrupt-check-time", "duration", "0s", "ignore",
       "Duration of time between cluster corruption check passes.", E),
    _f("experimental-enable-v2v3", "string", "", "refuse",
       "Serve v2 requests through the v3 backend under a given prefix.", E),
    _f("experimental-backend-bbolt-freelist-type", "string", "array", "ignore",
       "ExperimentalBackendFreelistType specifies the type of freelist that boltdb backend uses(array and "
       "map are supported types).", E),
    _f("experimental-enable-lease-checkpoint", "bool", "false", "ignore",
       "ExperimentalEnableLeaseCheckpoint enables primary lessor to persist lease remainingTTL to prevent "
       "indefinite auto-renewal of long lived leases.", E),
    _f("experimental-enable-lease-checkpoint-persist", "bool", "false", "ignore",
       "Enable persisting remainingTTL to prevent indefinite auto-renewal of long lived leases."),
    _f("experimental-compaction-batch-limit", "int", "1000", "ignore",
       "ExperimentalCompactionBatchLimit sets the maximum revisions deleted in each compaction batch.", E),
    _f("experimental-peer-skip-client-san-verification", "bool", "false", "ignore",
       "Skip verification of SAN field in client certificate for peer connections.", E),
    _f("experimental-watch-progress-notify-interval", "duration", "10m", "ignore",
       "Duration of periodical watch progress notification.", E),
    _f("experimental-warning-apply-duration", "duration", "100ms", "ignore",
       "Warning is generated if requests take more than this duration.", E),
    _f("force-new-cluster", "bool", "false", "use", "Force to create a new one-member cluster.", U),
    _f("unsafe-no-fsync", "bool", "false", "use", "Disables fsync, unsafe, will cause data loss."),
    _f("debug", "bool", "false", "use",
       "Enable debug-level logging for etcd. [WARN] Will be deprecated in v3.5. Use '--log-level=debug' "
       "instead.", "TO BE DEPRECATED"),
    _f("log-package-levels", "string", "", "ignore",
       "Specify a particular log level for each etcd package (eg: 'etcdmain=CRITICAL,etcdserver=DEBUG').",
       "TO BE DEPRECATED"),
    _f("config-file", "string", "", "use", "Path to the server configuration file."),
    _f("version", "bool", "false", "use", "Print the version and exit."),
    # etcd's `ignored` list: accepted with a warning, like boolean flags (never take the next argument)
    *(_f(n, "legacy", "", "legacy") for n in (
        "cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
        "max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
        "retry-interval", "snapshot", "v", "vv")),
)
# fmt: on
FLAGS_BY_NAME: dict[str, Flag] = {f.name: f for f in FLAGS}

# etcdpy's own flags, which etcd does not have: kept out of FLAGS (the etcd 3.4 flag set) and
# settable on the command line only, so no environment or config file turns them on by accident.
# fmt: off
TEST_FLAGS: tuple[Flag, ...] = (
    _f("experimental-snapshot-catchup-entries", "uint", "5000", "use",
       "Number of entries for a slow follower to catch up after compacting the raft storage entries\n"
       "(etcd 3.5's flag, taken early by etcdpy).", U),
    _f("unsafe-test-faults", "bool", "false", "use",
       "TEST ONLY: serve PUT/GET /debug/faults on the client port to drop or delay traffic with chosen\n"
       "peers (see app/faults.py). Never enable it in production.", U),
)
# fmt: on
_ALL_FLAGS_BY_NAME: dict[str, Flag] = {**FLAGS_BY_NAME, **{f.name: f for f in TEST_FLAGS}}

# Flags that only tune etcd internals etcdpy does not have; kept here in one list so it is easy to
# see what is dropped. They are parsed (bad values fail like in etcd) and otherwise ignored:
# bbolt batching and freelist, gRPC stream/keepalive limits (etcdpy serves the JSON gateway only),
# corruption checks, lease checkpoints, compaction batching, watch progress interval, slow-apply
# warnings, metrics detail, capnslog per-package levels, the v2 proxy's timers (proxy itself is
# refused), the discovery fallback (discovery itself is refused), SAN checks (TLS is refused).
IGNORED_FLAGS: tuple[str, ...] = tuple(f.name for f in FLAGS if f.fate == "ignore")
UNSUPPORTED_FLAGS: tuple[str, ...] = tuple(f.name for f in FLAGS if f.fate == "refuse")
LEGACY_FLAGS: tuple[str, ...] = tuple(f.name for f in FLAGS if f.fate == "legacy")

USAGE = """Usage:

  etcdpy [flags]
    Start an etcd-compatible server (etcd 3.4 flags and ETCD_* environment variables).

  etcdpy --version
    Show the version of etcdpy.

  etcdpy -h | --help
    Show the help information about etcdpy.

  etcdpy --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.
"""

_SECTION_ORDER = (M, C, S, A, P, L, X, E, U, "TO BE DEPRECATED")


def flags_help() -> str:
    """The flag list, laid out like `etcd --help`, with etcdpy's support noted per flag."""
    out: list[str] = [""]
    for section in _SECTION_ORDER:
        out.append(f"{section}:" if section != "TO BE DEPRECATED" else "TO BE DEPRECATED:\n")
        for flag in (*FLAGS, *TEST_FLAGS):
            if flag.section != section:
                continue
            shown = flag.default if flag.shown is None else flag.shown
            out.append(f"  --{flag.name} '{shown}'")
            out.extend(f"    {line}" for line in flag.help.split("\n"))
            if flag.fate == "refuse":
                out.append("    [etcdpy] not supported yet: only the default value is accepted.")
            elif flag.fate == "ignore":
                out.append("    [etcdpy] accepted and ignored.")
        if section == U:
            out.append(
                "\nCAUTIOUS with unsafe flag! It may break the guarantees given by the consensus protocol!"
            )
        out.append("")
    return "\n".join(out) + "\n"


def version_text() -> str:
    """Like `etcd --version`; scripts grep the first line for the etcd API version served."""
    return (
        f"etcd Version: {ETCD_VERSION}\n"
        f"etcdpy Version: {ETCDPY_VERSION}\n"
        "Git SHA: Not provided\n"
        f"Python Version: {platform.python_version()}\n"
        f"OS/Arch: {sys.platform}/{platform.machine()}\n"
    )


# ---------------------------------------------------------------------------------------------
# flag values


def _convert(flag: Flag, raw: str, prev: Value) -> Value:
    """Parse one value as the etcd flag type does; ValueError text is Go's."""
    kind = flag.kind
    if kind == "string":
        return raw
    if kind == "bool":
        return parse_go_bool(raw)
    if kind == "uint":
        return parse_go_int(raw, bits=64)
    if kind == "int":
        return parse_go_int(raw, bits=64, signed=True)
    if kind == "uint32":  # etcd flags.Uint32Value: strconv.ParseUint(s, 10, 32), error not rewritten
        try:
            return parse_go_int(raw, bits=32, base=10)
        except ValueError as exc:
            why = "invalid syntax" if str(exc) == "parse error" else str(exc)
            raise ValueError(f'strconv.ParseUint: parsing "{raw}": {why}') from None
    if kind == "duration":
        try:
            return parse_go_duration(raw)
        except ValueError:
            raise ValueError("parse error") from None
    if kind == "urls":  # flags.UniqueURLs with "" as an allowed exception that changes nothing
        return prev if raw == "" else parse_urls(raw)
    if kind == "cors":  # "*" is an allowed exception: added to the current set
        if raw == "*":
            assert isinstance(prev, tuple)
            return tuple(sorted({*prev, "*"}))
        return parse_urls(raw)
    if kind == "ustrings":
        return tuple(sorted(set(raw.split(","))))
    if kind == "strings":
        return tuple(s for s in raw.split(",") if s)
    if kind == "choice":
        if raw not in flag.choices:
            raise ValueError("invalid value")
        return raw
    return True  # legacy: any value, ignored


def default_value(flag: Flag) -> Value:
    if flag.kind in ("urls", "cors") and flag.default == "":
        return ()
    return _convert(flag, flag.default, ())


@dataclass(slots=True)
class _State:
    values: dict[str, Value] = field(
        default_factory=lambda: {f.name: default_value(f) for f in (*FLAGS, *TEST_FLAGS)}
    )
    on_cmdline: set[str] = field(default_factory=set)
    is_set: set[str] = field(default_factory=set)  # Go fs.Visit: set by argv or by environment

    def set(self, flag: Flag, raw: str) -> None:
        self.values[flag.name] = _convert(flag, raw, self.values[flag.name])
        self.is_set.add(flag.name)

    def str_(self, name: str) -> str:
        v = self.values[name]
        assert isinstance(v, str)
        return v

    def bool_(self, name: str) -> bool:
        v = self.values[name]
        assert isinstance(v, bool)
        return v

    def int_(self, name: str) -> int:
        v = self.values[name]
        assert isinstance(v, int) and not isinstance(v, bool)
        return v

    def strs(self, name: str) -> tuple[str, ...]:
        v = self.values[name]
        assert isinstance(v, tuple)
        return v


def _parse_args(argv: Sequence[str], st: _State, warn: Warn) -> list[str]:
    """Go flag.FlagSet.Parse; returns the arguments left after the flags."""
    args = list(argv)
    while args:
        s = args[0]
        if len(s) < 2 or s[0] != "-":
            break
        minuses = 2 if s[1] == "-" else 1
        if s == "--":
            args.pop(0)
            break
        name = s[minuses:]
        if name == "" or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {s}")
        args.pop(0)
        name, eq, value = name.partition("=")
        flag = _ALL_FLAGS_BY_NAME.get(name)
        if flag is None:
            if name in ("help", "h"):
                raise ExitRequest(0, stdout=flags_help(), stderr=USAGE + "\n")
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind in ("bool", "legacy"):
            if flag.kind == "legacy":
                warn(f'flag "-{name}" is no longer supported - ignoring.')
            try:
                st.set(flag, value if eq else "true")
            except ValueError as exc:
                if eq:
                    raise FlagError(f'invalid boolean value "{value}" for -{name}: {exc}') from None
                raise FlagError(f"invalid boolean flag {name}: {exc}") from None
        else:
            if not eq:
                if not args:
                    raise FlagError(f"flag needs an argument: -{name}")
                value = args.pop(0)
            try:
                st.set(flag, value)
            except ValueError as exc:
                raise FlagError(f'invalid value "{value}" for flag -{name}: {exc}') from None
        st.on_cmdline.add(name)
    return args


def env_key(name: str) -> str:
    """flags.FlagToEnv: ETCD_ + upper case, '-' → '_'."""
    return f"{ENV_PREFIX}_{name.upper().replace('-', '_')}"


def _apply_env(env: Mapping[str, str], st: _State, warn: Warn) -> None:
    """flags.SetFlagsFromEnv: non-empty ETCD_<FLAG> for every flag not given on the command line."""
    used: set[str] = set()
    shadowed = {env_key(n) for n in st.on_cmdline}
    for flag in sorted(FLAGS, key=lambda f: f.name):
        key = env_key(flag.name)
        if flag.name in st.on_cmdline or not env.get(key):
            continue
        used.add(key)
        if flag.kind == "legacy":
            warn(f'flag "-{flag.name}" is no longer supported - ignoring.')
        try:
            st.set(flag, env[key])
        except ValueError as exc:
            raise ConfigError(f'invalid value "{env[key]}" for {key}: {exc}') from None
    for key in sorted(env):
        if key in used:
            continue
        if key in shadowed and ENV_SHADOWED_IS_ERROR:
            raise ConfigError(
                f'conflicting environment variable "{key}" is shadowed by corresponding command-line flag '
                "(either unset environment variable or disable flag)"
            )
        if key.startswith(ENV_PREFIX + "_"):
            warn(f"unrecognized environment variable {key}={env[key]}")


# ---------------------------------------------------------------------------------------------
# --config-file: a small YAML subset (etcd's file is flat `key: value`, plus two TLS blocks)


def _yaml_scalar(text: str) -> str | None:
    text = text.strip()
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        if end < 0:
            raise ValueError(f"unterminated quoted string: {text}")
        inner = text[1:end]
        return inner.replace("''", "'") if quote == "'" else inner.replace('\\"', '"')
    text = text.split(" #", 1)[0].strip()
    return None if text in ("", "~", "null", "Null", "NULL") else text


def parse_config_yaml(text: str) -> dict[str, str | list[str] | dict[str, str | None] | None]:
    """Top-level `key: value`, `key: [a, b]`, `key:` + `- item` lines, and one level of nesting."""
    out: dict[str, str | list[str] | dict[str, str | None] | None] = {}
    current: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        indented = line[0] in " \t"
        if indented and current is not None:
            if stripped.startswith("- "):
                seq = out.get(current)
                items = seq if isinstance(seq, list) else []
                item = _yaml_scalar(stripped[2:])
                items.append(item or "")
                out[current] = items
                continue
            key, colon, rest = stripped.partition(":")
            if colon:
                block = out.get(current)
                sub = block if isinstance(block, dict) else {}
                sub[key.strip()] = _yaml_scalar(rest)
                out[current] = sub
                continue
        key, colon, rest = stripped.partition(":")
        if indented or not colon:
            raise ValueError(f"line {lineno}: expected 'key: value', got {line!r}")
        key = key.strip()
        rest = rest.strip()
        if rest.startswith("[") and rest.endswith("]"):
            out[key] = [v for v in (_yaml_scalar(p) for p in rest[1:-1].split(",")) if v is not None]
        else:
            out[key] = _yaml_scalar(rest)
        current = key
    return out


_YAML_BOOLS = {"yes": "true", "on": "true", "y": "true", "no": "false", "off": "false", "n": "false"}


def _apply_config_file(path: str, text: str, st: _State) -> None:
    """embed.ConfigFromFile: keys are the flag names; flags and ETCD_* variables are ignored."""
    try:
        doc = parse_config_yaml(text)
    except ValueError as exc:
        raise ConfigError(f"error converting YAML to JSON: yaml: {exc}") from None
    for key, raw in doc.items():
        if key in ("client-transport-security", "peer-transport-security"):
            if isinstance(raw, dict) and any(v not in (None, "", "false") for v in raw.values()):
                raise UnsupportedError(f"{key} in --config-file {path} is not supported yet")
            continue
        flag = FLAGS_BY_NAME.get(key)
        if flag is None or raw is None or flag.fate == "legacy" or key in ("config-file", "version"):
            continue  # like yaml.Unmarshal: unknown keys are ignored
        if isinstance(raw, dict):
            raise ConfigError(f"config file {path}: {key}: expected a value, got a mapping")
        value = ",".join(raw) if isinstance(raw, list) else raw
        if flag.kind == "bool":
            value = _YAML_BOOLS.get(value.lower(), value)
        if flag.kind == "duration" and value.isdigit():
            value = f"{value}ns"  # YAML durations are time.Duration integers
        try:
            st.set(flag, value)
        except ValueError as exc:
            raise ConfigError(f'config file {path}: invalid value "{value}" for {key}: {exc}') from None


# ---------------------------------------------------------------------------------------------


def _default_warn(message: str) -> None:
    print(f"etcdpy: warning: {message}", file=sys.stderr)


def _check_unsupported(st: _State) -> None:
    for name in UNSUPPORTED_FLAGS:
        flag = FLAGS_BY_NAME[name]
        if st.values[name] != default_value(flag):
            raise UnsupportedError(f"--{name} is not supported yet")
    if st.str_("auth-token") != "simple":
        kind = st.str_("auth-token").split(",", 1)[0]
        raise UnsupportedError(f"--auth-token {kind} is not supported yet (only 'simple')")


def parse(argv: Sequence[str], env: Mapping[str, str], *, warn: Warn | None = None) -> Config:
    """argv (without the program name) + environment → a validated Config.

    Raises FlagError (exit 2), ConfigError / UnsupportedError (exit 1), or ExitRequest for
    --help / --version. Warnings (legacy flags, unknown ETCD_* variables) go to `warn`.
    """
    say = warn or _default_warn
    st = _State()
    rest = _parse_args(argv, st, say)
    if rest:
        raise ConfigError(f"'{rest[0]}' is not a valid flag")
    if st.bool_("version"):
        raise ExitRequest(0, stdout=version_text())

    config_file = st.str_("config-file") or env.get(env_key("config-file"), "")
    if config_file:
        st = _State()
        try:
            with open(config_file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(
                f"open {config_file}: {exc.strerror.lower() if exc.strerror else exc}"
            ) from None
        _apply_config_file(config_file, text, st)
    else:
        _apply_env(env, st, say)

    _check_unsupported(st)
    return validate(_build(st, config_file, say))


def _build(st: _State, config_file: str, warn: Warn) -> Config:
    """etcdmain configFromCmdLine + startEtcdOrProxyV2's defaulting, into a Config."""
    name = st.str_("name")
    peer_adv = st.strs("initial-advertise-peer-urls")
    client_adv = st.strs("advertise-client-urls")
    if not config_file and "listen-client-urls" in st.is_set and "advertise-client-urls" not in st.is_set:
        client_adv = ()  # etcd: an explicit listen URL needs an explicit advertise URL
    cluster = st.str_("initial-cluster")
    if name != DEFAULT_NAME and cluster == DEFAULT_INITIAL_CLUSTER:
        # UpdateDefaultClusterFromName: `etcd --name abc` alone means abc=<advertised peer URLs>
        cluster = ",".join(f"{name or DEFAULT_NAME}={u}" for u in peer_adv)
    try:
        initial_cluster = parse_initial_cluster(cluster)
    except ValueError as exc:
        raise BootstrapError(f"error setting up initial cluster: {exc}") from None
    if not initial_cluster:
        raise BootstrapError(f'couldn\'t find local name "{name}" in the initial cluster configuration')

    log_outputs = st.strs("log-outputs")
    if "log-output" in st.is_set and "log-outputs" not in st.is_set:
        warn("'--log-output' flag has been deprecated! Please use '--log-outputs'!")
        log_outputs = st.strs("log-output")
    log_level = "debug" if st.bool_("debug") else st.str_("log-level")
    bcrypt_cost = st.int_("bcrypt-cost")
    if not 4 <= bcrypt_cost <= 31:
        warn(f"Use default bcrypt-cost 10 instead of the invalid value {bcrypt_cost}")
        bcrypt_cost = 10
    if st.bool_("experimental-enable-lease-checkpoint-persist") and not st.bool_(
        "experimental-enable-lease-checkpoint"
    ):
        raise ConfigError(
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint"
        )
    return Config(
        name=name,
        data_dir=st.str_("data-dir"),
        wal_dir=st.str_("wal-dir"),
        snapshot_count=st.int_("snapshot-count"),
        heartbeat_interval_ms=st.int_("heartbeat-interval"),
        election_timeout_ms=st.int_("election-timeout"),
        initial_election_tick_advance=st.bool_("initial-election-tick-advance"),
        listen_peer_urls=st.strs("listen-peer-urls"),
        listen_client_urls=st.strs("listen-client-urls"),
        max_snapshots=st.int_("max-snapshots"),
        max_wals=st.int_("max-wals"),
        quota_backend_bytes=st.int_("quota-backend-bytes"),
        max_txn_ops=st.int_("max-txn-ops"),
        max_request_bytes=st.int_("max-request-bytes"),
        initial_advertise_peer_urls=peer_adv,
        initial_cluster=initial_cluster,
        initial_cluster_state=st.str_("initial-cluster-state"),
        initial_cluster_token=st.str_("initial-cluster-token"),
        advertise_client_urls=client_adv,
        strict_reconfig_check=st.bool_("strict-reconfig-check"),
        pre_vote=st.bool_("pre-vote"),
        auto_compaction_retention=st.str_("auto-compaction-retention"),
        auto_compaction_mode=st.str_("auto-compaction-mode"),
        enable_v2=st.bool_("enable-v2"),
        enable_grpc_gateway=st.bool_("enable-grpc-gateway"),
        cors=st.strs("cors"),
        host_whitelist=st.strs("host-whitelist"),
        auth_token=st.str_("auth-token"),
        bcrypt_cost=bcrypt_cost,
        auth_token_ttl=st.int_("auth-token-ttl"),
        logger=st.str_("logger"),
        log_outputs=log_outputs,
        log_level=log_level,
        force_new_cluster=st.bool_("force-new-cluster"),
        unsafe_no_fsync=st.bool_("unsafe-no-fsync"),
        snapshot_catchup_entries=st.int_("experimental-snapshot-catchup-entries"),
        unsafe_test_faults=st.bool_("unsafe-test-faults"),
        config_file=config_file,
    )


def error_text(exc: ConfigError) -> tuple[int, str]:
    """What etcd prints on stderr for `exc`, and the exit code."""
    if isinstance(exc, FlagError):
        return 2, f"{exc.message}\n{USAGE}\n"
    if isinstance(exc, UnsupportedError | BootstrapError):
        return 1, f"etcdpy: {exc.message}\n"
    text = f"etcdpy: error verifying flags, {exc.message}. See 'etcdpy --help'.\n"
    if exc.hint:
        text += f"etcdpy: {exc.hint}\n"
    return 1, text


# The HTTP server of the client and peer ports (etcdpy's own choice, not an etcd flag):
# app.httpserver, or uvicorn (kept working and selectable: ETCDPY_HTTP_SERVER=uvicorn).
HTTP_SERVERS = ("lean", "uvicorn")


def main(argv: Sequence[str] | None = None) -> int:
    """The `etcdpy` / `python -m app` entry point: parse, then run the server."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("gateway", "grpc-proxy"):
        print(f"etcdpy: 'etcd {args[0]}' is not supported", file=sys.stderr)
        return 1
    try:
        cfg = parse(args, os.environ)
    except ExitRequest as req:
        sys.stderr.write(req.stderr)
        sys.stdout.write(req.stdout)
        sys.stdout.flush()
        return req.code
    except ConfigError as exc:
        code, text = error_text(exc)
        sys.stderr.write(text)
        return code
    http_server = os.environ.get("ETCDPY_HTTP_SERVER", "lean")
    if http_server not in HTTP_SERVERS:
        sys.stderr.write(f"etcdpy: ETCDPY_HTTP_SERVER={http_server!r}: expected one of {', '.join(HTTP_SERVERS)}\n")
        return 1
    cfg = dataclasses.replace(cfg, http_server=http_server)
    from app.faults import FAULTS
    from app.server import run  # imported late: parsing and --help must not need the server stack

    FAULTS.enabled = cfg.unsafe_test_faults  # the process-wide fault table (test-only flag)
    return run(cfg)
