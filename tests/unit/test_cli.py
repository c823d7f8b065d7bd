"""Unit tests of etcd 3.4's command line (app/cli.py) and the Config it builds (app/config.py).

Expected messages and exit codes were taken from /usr/bin/etcd 3.4.23 run with the same
arguments (see the brief's report); these tests do not need etcd or the server stack.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import cli
from app.cli import ExitRequest, FlagError, main, parse
from app.config import (
    BootstrapError,
    Config,
    ConfigError,
    UnsupportedError,
    parse_go_bool,
    parse_go_duration,
    parse_go_int,
    validate,
)

REPO = Path(__file__).resolve().parents[2]

# Loopback URLs that make a custom single-member setup valid.
CLIENT = "http://127.0.0.1:22901"
PEER = "http://127.0.0.1:22902"
LOCAL = [
    "--listen-client-urls", CLIENT, "--advertise-client-urls", CLIENT,
    "--listen-peer-urls", PEER, "--initial-advertise-peer-urls", PEER,
]  # fmt: skip


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default data dir (default.etcd) is relative to the working directory, and a data dir
    # that exists turns off the --initial-cluster checks: a `bin/serve` run in the checkout
    # must not change what these tests see.
    monkeypatch.chdir(tmp_path)


def p(*argv: str, env: dict[str, str] | None = None) -> Config:
    return parse(list(argv), env or {}, warn=lambda _m: None)


def warnings_of(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    seen: list[str] = []
    parse(argv, env or {}, warn=seen.append)
    return seen


# --- defaults ------------------------------------------------------------------------------------


def test_no_flags_gives_the_default_config() -> None:
    cfg = p()
    assert cfg == Config()
    assert cfg.name == "default"
    assert cfg.data_dir == "default.etcd"
    assert cfg.wal_dir == ""
    assert cfg.effective_wal_dir == "default.etcd/member/wal"
    assert cfg.snapshot_count == 100000
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_ms) == (100, 1000)
    assert cfg.listen_client_urls == ("http://localhost:2379",)
    assert cfg.advertise_client_urls == ("http://localhost:2379",)
    assert cfg.listen_peer_urls == ("http://localhost:2380",)
    assert cfg.initial_advertise_peer_urls == ("http://localhost:2380",)
    assert cfg.initial_cluster == (("default", "http://localhost:2380"),)
    assert (cfg.initial_cluster_state, cfg.initial_cluster_token) == ("new", "etcd-cluster")
    assert cfg.enable_v2 is True  # deliberate difference: etcd 3.4 defaults to false
    assert cfg.cors == ("*",) and cfg.host_whitelist == ("*",)
    assert (cfg.max_request_bytes, cfg.quota_backend_bytes, cfg.max_txn_ops) == (1572864, 0, 128)
    assert (cfg.max_snapshots, cfg.max_wals) == (5, 5)
    assert cfg.strict_reconfig_check is True and cfg.pre_vote is False
    assert (cfg.auto_compaction_mode, cfg.auto_compaction_retention) == ("periodic", "0")
    assert (cfg.logger, cfg.log_outputs, cfg.log_level) == ("capnslog", ("default",), "info")
    assert cfg.unsafe_no_fsync is False and cfg.force_new_cluster is False
    assert cfg.election_ticks == 10
    assert cfg.request_timeout_s == 7.0


def test_config_derives_data_dir_and_initial_cluster_from_name() -> None:
    cfg = Config(name="n1", initial_advertise_peer_urls=(PEER,))
    assert cfg.data_dir == "n1.etcd"
    assert cfg.initial_cluster == (("n1", PEER),)
    assert Config(name="n1", data_dir="/d").data_dir == "/d"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"  # type: ignore[misc]


# --- syntax ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["-name", "n1"], ["-name=n1"], ["--name", "n1"], ["--name=n1"]],
    ids=["-f v", "-f=v", "--f v", "--f=v"],
)
def test_all_four_flag_forms(argv: list[str]) -> None:
    cfg = p(*argv)
    assert cfg.name == "n1"
    assert cfg.data_dir == "n1.etcd"
    assert cfg.initial_cluster == (("n1", "http://localhost:2380"),)


def test_a_value_may_start_with_a_dash_and_an_equals_value_may_contain_equals() -> None:
    assert p("--data-dir", "-odd").data_dir == "-odd"
    assert p("--initial-cluster-token=a=b").initial_cluster_token == "a=b"


def test_last_occurrence_wins() -> None:
    assert p("--name", "a", "--name=b", "-name", "c").name == "c"
    assert p("--snapshot-count", "5", "--snapshot-count", "7").snapshot_count == 7
    assert p("--enable-v2=false", "--enable-v2").enable_v2 is True


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_go_true_spellings(text: str) -> None:
    assert p(f"--pre-vote={text}").pre_vote is True
    assert parse_go_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_go_false_spellings(text: str) -> None:
    assert p(f"--enable-v2={text}").enable_v2 is False


def test_bare_bool_flag_is_true_and_never_takes_the_next_argument() -> None:
    assert p("--pre-vote").pre_vote is True
    assert p("--pre-vote", "--name", "x").name == "x"
    with pytest.raises(ConfigError, match=r"^'false' is not a valid flag$") as info:
        p("--enable-v2", "false")
    assert not isinstance(info.value, FlagError)  # etcd: exit 1, not 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--enable-v2=maybe"], 'invalid boolean value "maybe" for -enable-v2: parse error'),
        (["--enable-v2="], 'invalid boolean value "" for -enable-v2: parse error'),
        (["--foo"], "flag provided but not defined: -foo"),
        (["-foo=1"], "flag provided but not defined: -foo"),
        (["---name", "x"], "bad flag syntax: ---name"),
        (["--=x"], "bad flag syntax: --=x"),
        (["--name"], "flag needs an argument: -name"),
        (["--snapshot-count", "-1"], 'invalid value "-1" for flag -snapshot-count: parse error'),
        (["--snapshot-count", "abc"], 'invalid value "abc" for flag -snapshot-count: parse error'),
        (
            ["--max-request-bytes", "99999999999999999999"],
            'invalid value "99999999999999999999" for flag -max-request-bytes: value out of range',
        ),
        (["--quota-backend-bytes", "1.5"], 'invalid value "1.5" for flag -quota-backend-bytes: parse error'),
        (
            ["--grpc-keepalive-timeout", "5"],
            'invalid value "5" for flag -grpc-keepalive-timeout: parse error',
        ),
        (
            ["--max-concurrent-streams", "-1"],
            'invalid value "-1" for flag -max-concurrent-streams: strconv.ParseUint: parsing "-1": invalid syntax',
        ),
        (
            ["--initial-cluster-state", "bad"],
            'invalid value "bad" for flag -initial-cluster-state: invalid value',
        ),
        (["--proxy", "bogus"], 'invalid value "bogus" for flag -proxy: invalid value'),
        (
            ["--cors", "http://x"],
            'invalid value "http://x" for flag -cors: URL address does not have the form "host:port": http://x',
        ),
        (
            ["--cors", "*,http://x:1"],
            'invalid value "*,http://x:1" for flag -cors: URL scheme must be http, https, unix, or unixs: *',
        ),
        (
            ["--listen-client-urls", "foo://127.0.0.1:1"],
            'invalid value "foo://127.0.0.1:1" for flag -listen-client-urls: '
            "URL scheme must be http, https, unix, or unixs: foo://127.0.0.1:1",
        ),
        (
            ["--listen-client-urls", "http://127.0.0.1:1/path"],
            'invalid value "http://127.0.0.1:1/path" for flag -listen-client-urls: '
            "URL must not contain a path: http://127.0.0.1:1/path",
        ),
    ],
)
def test_go_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as info:
        p(*argv)
    assert info.value.message == message


def test_non_flag_arguments_are_refused() -> None:
    for argv, bad in (
        (["foo"], "foo"),
        (["-"], "-"),
        (["--", "--name"], "--name"),
        (["--name", "a", "b"], "b"),
    ):
        with pytest.raises(ConfigError) as info:
            p(*argv)
        assert info.value.message == f"'{bad}' is not a valid flag"
        assert not isinstance(info.value, FlagError)


def test_url_lists_are_sorted_and_deduplicated_like_etcd() -> None:
    cfg = p(
        "--listen-client-urls", "http://127.0.0.1:2,http://127.0.0.1:1, http://127.0.0.1:2",
        "--advertise-client-urls", "http://b:1,http://a:1",
    )  # fmt: skip
    assert cfg.listen_client_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert cfg.advertise_client_urls == ("http://a:1", "http://b:1")


def test_cors_and_host_whitelist() -> None:
    assert p("--cors", "http://b.example:80,http://a.example:8080").cors == (
        "http://a.example:8080",
        "http://b.example:80",
    )
    assert p("--cors", "http://a:1", "--cors", "*").cors == ("*", "http://a:1")  # etcd adds "*"
    assert p("--host-whitelist", "b.example,a.example").host_whitelist == ("a.example", "b.example")


def test_go_integer_syntax() -> None:
    cfg = p("--heartbeat-interval", "0x10", "--election-timeout", "0o1000", "--snapshot-count", "1_000")
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_ms, cfg.snapshot_count) == (16, 512, 1000)
    assert parse_go_int("010") == 8
    assert parse_go_int("-5", signed=True) == -5
    assert p("--quota-backend-bytes", "-5").quota_backend_bytes == -5  # int64 in etcd
    for bad in ("", "-1", "+1", "1_", "_1", "0x", "1__0", "9" * 25):
        with pytest.raises(ValueError):
            parse_go_int(bad)


def test_go_durations() -> None:
    assert parse_go_duration("0") == 0
    assert parse_go_duration("1h30m") == 5400 * 10**9
    assert parse_go_duration("1.5s") == 1_500_000_000
    assert parse_go_duration("100ms") == 100_000_000
    for bad, why in (
        ("5", "missing unit"),
        ("5x", 'unknown unit "x"'),
        ("", "invalid duration"),
        (".s", "invalid"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_go_duration(bad)


# --- environment ----------------------------------------------------------------------------------


def test_env_sets_flags_not_on_the_command_line() -> None:
    env = {
        "ETCD_NAME": "envname",
        "ETCD_LISTEN_CLIENT_URLS": CLIENT,
        "ETCD_ADVERTISE_CLIENT_URLS": CLIENT,
        "ETCD_ENABLE_V2": "false",
        "ETCD_SNAPSHOT_COUNT": "42",
        "ETCD_INITIAL_CLUSTER_TOKEN": "tok",
    }
    cfg = p(env=env)
    assert cfg.name == "envname"
    assert cfg.data_dir == "envname.etcd"  # derived from a name that came from the environment
    assert cfg.initial_cluster == (("envname", "http://localhost:2380"),)
    assert cfg.listen_client_urls == (CLIENT,) and cfg.advertise_client_urls == (CLIENT,)
    assert cfg.enable_v2 is False
    assert cfg.snapshot_count == 42
    assert cfg.initial_cluster_token == "tok"


def test_env_data_dir_and_empty_values_are_ignored() -> None:
    assert p(env={"ETCD_DATA_DIR": "/var/lib/x"}).data_dir == "/var/lib/x"
    assert p(env={"ETCD_NAME": ""}).name == "default"


def test_env_and_flag_for_the_same_setting_is_refused_like_etcd() -> None:
    assert cli.ENV_SHADOWED_IS_ERROR
    with pytest.raises(ConfigError) as info:
        p("--name", "x", env={"ETCD_NAME": "y"})
    assert info.value.message == (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag '
        "(either unset environment variable or disable flag)"
    )
    # another flag's variable is still used
    assert p("--name", "x", env={"ETCD_SNAPSHOT_COUNT": "9"}).snapshot_count == 9


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        p(env={"ETCD_SNAPSHOT_COUNT": "abc"})
    assert info.value.message == 'invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error'
    assert not isinstance(info.value, FlagError)
    with pytest.raises(ConfigError, match='invalid value "yes" for ETCD_ENABLE_V2: parse error'):
        p(env={"ETCD_ENABLE_V2": "yes"})
    with pytest.raises(
        ConfigError, match='invalid value "bad" for ETCD_INITIAL_CLUSTER_STATE: invalid value'
    ):
        p(env={"ETCD_INITIAL_CLUSTER_STATE": "bad"})


def test_unrecognized_etcd_variables_warn() -> None:
    seen = warnings_of([], {"ETCD_BOGUS": "1", "ETCDCTL_API": "3", "HOME": "/root"})
    assert seen == ["unrecognized environment variable ETCD_BOGUS=1"]


def test_listen_client_urls_from_env_also_needs_advertise() -> None:
    with pytest.raises(ConfigError, match="--advertise-client-urls is required"):
        p(env={"ETCD_LISTEN_CLIENT_URLS": CLIENT})


# --- initial cluster ------------------------------------------------------------------------------


def test_name_alone_derives_the_initial_cluster_from_the_advertised_peer_urls() -> None:
    cfg = p("--name", "n1", "--initial-advertise-peer-urls", f"{PEER},http://127.0.0.1:22903")
    assert cfg.initial_cluster == (("n1", PEER), ("n1", "http://127.0.0.1:22903"))
    assert cfg.peer_urls_of("n1") == (PEER, "http://127.0.0.1:22903")


def test_default_name_keeps_the_default_initial_cluster_like_etcd() -> None:
    with pytest.raises(BootstrapError) as info:
        p("--initial-advertise-peer-urls", PEER)
    assert info.value.message == (
        "--initial-cluster has default=http://localhost:2380 but missing from "
        f'--initial-advertise-peer-urls={PEER} (resolved urls: "{PEER}" != "http://localhost:2380")'
    )


def test_explicit_initial_cluster() -> None:
    cfg = p(
        "--name", "b", *LOCAL,
        "--initial-cluster", f"a=http://127.0.0.1:22912,b={PEER},c=http://127.0.0.1:22932",
        "--initial-cluster-state", "new",
    )  # fmt: skip
    assert cfg.initial_cluster == (
        ("a", "http://127.0.0.1:22912"),
        ("b", PEER),
        ("c", "http://127.0.0.1:22932"),
    )
    assert (
        p(*LOCAL, "--initial-cluster", f"default={PEER}", "--initial-cluster-state", "existing") is not None
    )


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        (f"a={PEER}", 'couldn\'t find local name "default" in the initial cluster configuration'),
        ("", 'couldn\'t find local name "default" in the initial cluster configuration'),
        (
            "default=http://127.0.0.1:22903",
            f"--initial-cluster has default=http://127.0.0.1:22903 but missing from --initial-advertise-peer-urls={PEER}"
            f' (resolved urls: "{PEER}" != "http://127.0.0.1:22903")',
        ),
        (
            f"default={PEER},default=http://127.0.0.1:22903",
            f"--initial-cluster has default=http://127.0.0.1:22903 but missing from --initial-advertise-peer-urls={PEER}"
            f' (len(["{PEER}"]) != len(["{PEER}" "http://127.0.0.1:22903"]))',
        ),
        (f"default={PEER},b={PEER}", f"initial cluster b={PEER},default={PEER} has duplicate url"),
        (
            "default=xx",
            "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: xx",
        ),
    ],
)
def test_initial_cluster_errors(cluster: str, message: str) -> None:
    with pytest.raises(BootstrapError) as info:
        p(*LOCAL, "--initial-cluster", cluster)
    assert info.value.message == message


def test_advertised_url_missing_from_the_initial_cluster() -> None:
    with pytest.raises(
        BootstrapError, match=r"--initial-advertise-peer-urls has http://127\.0\.0\.1:22903 but missing"
    ):
        p(*LOCAL[:6], "--initial-advertise-peer-urls", f"{PEER},http://127.0.0.1:22903",
          "--initial-cluster", f"default={PEER}")  # fmt: skip


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--election-timeout", "10"],
            "--election-timeout[10ms] should be at least as 5 times as --heartbeat-interval[100ms]",
        ),
        (
            ["--election-timeout", "60000", "--heartbeat-interval", "1000"],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (["--heartbeat-interval", "0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (["--election-timeout", "0"], "--election-timeout must be >0 (set to 0ms)"),
        (["--log-level", "bogus"], 'unknown level "bogus"'),
        (["--logger", "bogus"], 'unknown logger option "bogus"'),
        (["--log-outputs", "stderr,stdout"], "--logger=capnslog supports only 1 value in '--log-outputs'"),
        (["--auto-compaction-mode", "bogus"], 'unknown auto-compaction-mode "bogus"'),
        (
            ["--auto-compaction-retention", "5x"],
            'error parsing CompactionRetention: time: unknown unit "x" in duration "5x"',
        ),
        (
            ["--listen-client-urls", "http://example.com:22901", "--advertise-client-urls", CLIENT],
            "expected IP in URL for binding (http://example.com:22901)",
        ),
        (
            ["--listen-client-urls", CLIENT],
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
        ),
        (
            ["--advertise-client-urls", "http://:22901"],
            '--advertise-client-urls "http://:22901" must be "host:port" (unexpected empty host (http://:22901))',
        ),
        (
            ["--experimental-enable-lease-checkpoint-persist"],
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint",
        ),
    ],
)
def test_validation_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        p(*argv)
    assert info.value.message.startswith(message)
    assert not isinstance(info.value, FlagError | UnsupportedError)


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error", "panic", "fatal"])
def test_log_levels(level: str) -> None:
    assert p("--log-level", level).log_level == level


def test_debug_flag_means_debug_level_and_zap_takes_several_outputs() -> None:
    assert p("--debug").log_level == "debug"
    cfg = p("--logger", "zap", "--log-outputs", "stdout,stderr")
    assert (cfg.logger, cfg.log_outputs) == ("zap", ("stderr", "stdout"))


def test_compaction_retention_units() -> None:
    assert p("--auto-compaction-retention", "1").compaction_retention() == 3600 * 10**9
    assert p("--auto-compaction-retention", "30m").compaction_retention() == 1800 * 10**9
    assert (
        p("--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000").compaction_retention()
        == 1000
    )


def test_bcrypt_cost_out_of_range_falls_back_to_10_with_a_warning() -> None:
    seen: list[str] = []
    cfg = parse(["--bcrypt-cost", "3"], {}, warn=seen.append)
    assert cfg.bcrypt_cost == 10
    assert seen == ["Use default bcrypt-cost 10 instead of the invalid value 3"]


def test_validate_checks_a_directly_built_config() -> None:
    assert validate(Config()) == Config()
    with pytest.raises(ConfigError, match="--advertise-client-urls is required"):
        validate(Config(advertise_client_urls=()))
    with pytest.raises(ConfigError, match='invalid value "localhost:1" for --cors'):
        validate(Config(cors=("localhost:1",)))
    with pytest.raises(ConfigError, match="unexpected clusterState"):
        validate(Config(initial_cluster_state="maybe"))


# --- unsupported, ignored and legacy flags ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--cert-file", "c.pem"],
        ["--key-file=k.pem"],
        ["--client-cert-auth"],
        ["--trusted-ca-file", "ca.pem"],
        ["--auto-tls"],
        ["--peer-cert-file", "p.pem"],
        ["--peer-auto-tls=true"],
        ["--cipher-suites", "TLS_AES_128_GCM_SHA256"],
        ["--discovery", "http://127.0.0.1:22909/x"],
        ["--discovery-srv", "example.com"],
        ["--proxy", "on"],
        ["--proxy", "readonly"],
        ["--enable-pprof"],
        ["--listen-metrics-urls", "http://127.0.0.1:22905"],
        ["--experimental-enable-v2v3", "/v2v3"],
    ],
)
def test_unsupported_flags_stop_the_start_naming_the_flag(argv: list[str]) -> None:
    with pytest.raises(UnsupportedError) as info:
        p(*argv)
    name = argv[0].split("=")[0]
    assert info.value.message == f"{name} is not supported yet"


def test_unsupported_flags_at_their_default_are_fine() -> None:
    assert (
        p("--proxy", "off", "--auto-tls=false", "--cert-file=", "--client-cert-auth=0", "--discovery", "")
        == Config()
    )
    assert p(env={"ETCD_PROXY": "off", "ETCD_PEER_AUTO_TLS": "false"}) == Config()


def test_unsupported_settings_other_than_flags() -> None:
    with pytest.raises(UnsupportedError, match="--auth-token jwt is not supported yet"):
        p("--auth-token", "jwt,pub-key=a,priv-key=b,sign-method=RS256")
    with pytest.raises(UnsupportedError, match=r"https://127\.0\.0\.1:22901: only http:// URLs"):
        p(
            "--listen-client-urls",
            "https://127.0.0.1:22901",
            "--advertise-client-urls",
            "https://127.0.0.1:22901",
        )


def test_internal_tuning_flags_are_accepted_and_ignored() -> None:
    argv = [
        "--grpc-keepalive-timeout", "30s", "--grpc-keepalive-interval=1h", "--metrics", "extensive",
        "--backend-batch-limit", "5", "--backend-batch-interval", "10ms", "--max-concurrent-streams", "10",
        "--experimental-initial-corrupt-check", "--experimental-corrupt-check-time", "1m",
        "--experimental-compaction-batch-limit", "10", "--experimental-watch-progress-notify-interval", "5s",
        "--experimental-backend-bbolt-freelist-type", "map", "--log-package-levels", "etcdmain=DEBUG",
        "--proxy-dial-timeout", "5", "--discovery-fallback", "exit",
    ]  # fmt: skip
    assert p(*argv) == Config()
    assert set(cli.IGNORED_FLAGS) >= {"grpc-keepalive-timeout", "metrics", "backend-batch-limit"}


def test_legacy_flags_are_ignored_with_etcds_warning() -> None:
    seen = warnings_of(["--snapshot", "--v", "--vv=3", "--peer-heartbeat-interval", "--name", "x"])
    assert seen == [
        'flag "-snapshot" is no longer supported - ignoring.',
        'flag "-v" is no longer supported - ignoring.',
        'flag "-vv" is no longer supported - ignoring.',
        'flag "-peer-heartbeat-interval" is no longer supported - ignoring.',
    ]
    with pytest.raises(ConfigError, match=r"^'1' is not a valid flag$"):
        p("--snapshot", "1")  # like a bool flag: the value must be attached with '='


# Every flag name etcd 3.4.23's etcdmain/config.go defines.
ETCD_34_FLAGS = """
config-file data-dir wal-dir listen-peer-urls listen-client-urls listen-metrics-urls max-snapshots max-wals name
snapshot-count heartbeat-interval election-timeout initial-election-tick-advance quota-backend-bytes
backend-batch-interval backend-batch-limit max-txn-ops max-request-bytes grpc-keepalive-min-time
grpc-keepalive-interval grpc-keepalive-timeout max-concurrent-streams initial-advertise-peer-urls
advertise-client-urls discovery discovery-fallback discovery-proxy discovery-srv discovery-srv-name
initial-cluster initial-cluster-token initial-cluster-state strict-reconfig-check enable-v2 pre-vote proxy
proxy-failure-wait proxy-refresh-interval proxy-dial-timeout proxy-write-timeout proxy-read-timeout cert-file
key-file client-cert-auth client-crl-file client-cert-allowed-hostname trusted-ca-file auto-tls peer-cert-file
peer-key-file peer-client-cert-auth peer-trusted-ca-file peer-auto-tls peer-crl-file peer-cert-allowed-cn
peer-cert-allowed-hostname cipher-suites experimental-peer-skip-client-san-verification cors host-whitelist
logger log-output log-outputs debug log-level log-package-levels version auto-compaction-retention
auto-compaction-mode enable-pprof metrics auth-token bcrypt-cost auth-token-ttl enable-grpc-gateway
experimental-initial-corrupt-check experimental-corrupt-check-time experimental-enable-v2v3
experimental-backend-bbolt-freelist-type experimental-enable-lease-checkpoint
experimental-enable-lease-checkpoint-persist experimental-compaction-batch-limit
experimental-watch-progress-notify-interval experimental-warning-apply-duration unsafe-no-fsync
force-new-cluster cluster-active-size cluster-remove-delay cluster-sync-interval config force max-result-buffer
max-retry-attempts peer-heartbeat-interval peer-election-timeout retry-interval snapshot v vv
""".split()


def test_every_etcd_flag_is_known_and_nothing_else() -> None:
    assert len(ETCD_34_FLAGS) == len(set(ETCD_34_FLAGS))
    assert set(cli.FLAGS_BY_NAME) == set(ETCD_34_FLAGS)


@pytest.mark.parametrize("flag", [f for f in cli.FLAGS if f.name not in ("version", "config-file")], ids=str)
def test_every_flag_accepts_its_default_value(flag: cli.Flag) -> None:
    value = flag.default if flag.kind != "legacy" else "x"
    argv = [f"--{flag.name}={value}"]
    if flag.name == "listen-client-urls":
        argv.append(f"--advertise-client-urls={value}")
    assert p(*argv) == Config()


# --- help, version, main --------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["-help=false"], ["--name", "x", "--help", "--foo"]])
def test_help(argv: list[str]) -> None:
    with pytest.raises(ExitRequest) as info:
        p(*argv)
    req = info.value
    assert req.code == 0
    assert req.stderr.startswith("Usage:\n")
    assert "  --name 'default'\n    Human-readable name for this member.\n" in req.stdout
    assert "  --enable-v2 'true'\n" in req.stdout
    assert (
        "  --cert-file ''\n    Path to the client server TLS cert file.\n    [etcdpy] not supported yet"
        in req.stdout
    )
    shown = {line.split()[0][2:] for line in req.stdout.splitlines() if line.startswith("  --")}
    assert {"name", "cors", "proxy", "force-new-cluster", "debug", "listen-metrics-urls"} <= shown


def test_unknown_flag_before_help_wins() -> None:
    with pytest.raises(FlagError, match="-foo"):
        p("--foo", "--help")


def test_version() -> None:
    with pytest.raises(ExitRequest) as info:
        p("--version")
    lines = info.value.stdout.splitlines()
    assert info.value.code == 0
    assert lines[0] == "etcd Version: 3.4.23"
    assert lines[1] == "etcdpy Version: 0.1.0"
    assert info.value.stderr == ""
    with pytest.raises(ConfigError, match="'foo' is not a valid flag"):
        p("--version", "foo")  # etcd checks leftover arguments first
    assert p("--version=false") == Config()


def test_main_exit_codes_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--foo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flag provided but not defined: -foo\nUsage:\n")

    assert main(["--election-timeout", "10"]) == 1
    assert capsys.readouterr().err == (
        "etcdpy: error verifying flags, --election-timeout[10ms] should be at least as 5 times as "
        "--heartbeat-interval[100ms]. See 'etcdpy --help'.\n"
    )

    assert main(["--cert-file", "x.pem"]) == 1
    assert capsys.readouterr().err == "etcdpy: --cert-file is not supported yet\n"

    assert main(["--initial-cluster", "a=http://127.0.0.1:22902"]) == 1
    assert capsys.readouterr().err == (
        'etcdpy: couldn\'t find local name "default" in the initial cluster configuration\n'
    )

    assert main(["--version"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("etcd Version: 3.4.23\n") and out.err == ""

    assert main(["--help"]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("Usage:") and out.out.startswith("\nMember:\n")

    assert main(["gateway"]) == 1
    assert "not supported" in capsys.readouterr().err


def test_main_missing_advertise_prints_etcds_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--listen-client-urls", CLIENT]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[1] == (
        "etcdpy: When listening on specific address(es), this etcd process must advertise accessible "
        "url(s) to each connected client."
    )


def test_main_hands_the_config_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[Config] = []
    fake = types.ModuleType("app.server")

    def run(cfg: Config) -> int:
        seen.append(cfg)
        return 7

    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app.server", fake)
    monkeypatch.setattr(os, "environ", {"ETCD_NAME": "srv"})
    assert main(["--snapshot-count", "3"]) == 7
    assert [(c.name, c.snapshot_count) for c in seen] == [("srv", 3)]


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )


def test_python_dash_m_app_version_end_to_end() -> None:
    done = _run_module("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["etcd Version: 3.4.23", "etcdpy Version: 0.1.0"]


def test_python_dash_m_app_bad_flag_end_to_end() -> None:
    done = _run_module("--no-such-flag")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "flag provided but not defined: -no-such-flag"
    assert done.stdout == ""


# --- --config-file --------------------------------------------------------------------------------


def test_config_file_replaces_flags_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text(
        "# etcd.conf.yml\n"
        "name: 'cf'\n"
        f"listen-client-urls: {CLIENT}\n"
        f"advertise-client-urls: {CLIENT}\n"
        f"listen-peer-urls: {PEER}\n"
        f"initial-advertise-peer-urls: {PEER}\n"
        f"initial-cluster: cf={PEER}\n"
        "enable-v2: false\n"
        "snapshot-count: 500\n"
        "heartbeat-interval: 50   # ms\n"
        'cors: "http://a.example:1"\n'
        "log-outputs: [stderr]\n"
        "proxy: 'off'\n"
        "unknown-key: whatever\n"
        "client-transport-security:\n"
        "  cert-file:\n"
        "  auto-tls: false\n"
    )
    cfg = p("--config-file", str(path), "--name", "ignored", env={"ETCD_NAME": "also-ignored"})
    assert cfg.name == "cf" and cfg.data_dir == "cf.etcd"
    assert cfg.initial_cluster == (("cf", PEER),)
    assert (cfg.enable_v2, cfg.snapshot_count, cfg.heartbeat_interval_ms) == (False, 500, 50)
    assert cfg.cors == ("http://a.example:1",) and cfg.log_outputs == ("stderr",)
    assert cfg.config_file == str(path)
    assert p(env={"ETCD_CONFIG_FILE": str(path)}).name == "cf"


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^open /nonexistent/x\.yaml: no such file or directory$"):
        p("--config-file", "/nonexistent/x.yaml")
    tls = tmp_path / "tls.yaml"
    tls.write_text("peer-transport-security:\n  cert-file: /p.pem\n")
    with pytest.raises(UnsupportedError, match="peer-transport-security"):
        p("--config-file", str(tls))
    bad = tmp_path / "bad.yaml"
    bad.write_text("snapshot-count: abc\n")
    with pytest.raises(ConfigError, match='invalid value "abc" for snapshot-count'):
        p("--config-file", str(bad))
