"""JournalConfig: defaults, JOURNAL_* variables, and errors that name them."""

from __future__ import annotations

import threading

import pytest

from journal import ConfigError, JournalConfig, JournalError


def test_defaults():
    config = JournalConfig()
    assert (config.head_bytes, config.tail_bytes) == (20_000, 20_000)
    assert config.result_ttl == 86_400 and config.shards == 16
    assert config.store_url == "memory://" and config.memory_budget == 256 * 1024 * 1024
    assert config.limits_for("stdout") == (20_000, 20_000)


def test_from_env_reads_every_field():
    env = {
        "JOURNAL_HEAD_BYTES": "100",
        "JOURNAL_TAIL_BYTES": "200",
        "JOURNAL_STREAM_LIMITS": "thoughts=10:20, stderr=0:5",
        "JOURNAL_RESULT_TTL": "3.5",
        "JOURNAL_LEASE_TIMEOUT": "7",
        "JOURNAL_REATTACH_GRACE": "9",
        "JOURNAL_SHARDS": "4",
        "JOURNAL_STORE_URL": "memory://",
        "JOURNAL_MEMORY_BUDGET": "1000000",
        "JOURNAL_CHECKPOINT_INTERVAL": "0.5",
        "JOURNAL_SWEEP_INTERVAL": "0",
        "UNRELATED": "x",
    }
    config = JournalConfig.from_env(env)
    assert config == JournalConfig(
        head_bytes=100, tail_bytes=200,
        stream_limits={"thoughts": (10, 20), "stderr": (0, 5)},
        result_ttl=3.5, lease_timeout=7.0, reattach_grace=9.0, shards=4,
        memory_budget=1_000_000, checkpoint_interval=0.5, sweep_interval=0.0,
    )
    assert config.limits_for("thoughts") == (10, 20)
    assert config.limits_for("stdout") == (100, 200)


def test_keywords_beat_the_environment():
    config = JournalConfig.from_env({"JOURNAL_HEAD_BYTES": "oops"}, head_bytes=5)
    assert config.head_bytes == 5


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("JOURNAL_HEAD_BYTES", "ten", r"head_bytes \(JOURNAL_HEAD_BYTES\) cannot parse 'ten'"),
        ("JOURNAL_TAIL_BYTES", "-1", r"tail_bytes \(JOURNAL_TAIL_BYTES\) must be >= 0"),
        ("JOURNAL_SHARDS", "12", r"shards \(JOURNAL_SHARDS\) must be a power of two"),
        ("JOURNAL_RESULT_TTL", "0", r"result_ttl \(JOURNAL_RESULT_TTL\) must be a finite"),
        ("JOURNAL_LEASE_TIMEOUT", "inf", r"lease_timeout \(JOURNAL_LEASE_TIMEOUT\)"),
        ("JOURNAL_STREAM_LIMITS", "thoughts=1", r"stream_limits \(JOURNAL_STREAM_LIMITS\)"),
        ("JOURNAL_STORE_URL", "journal.db", r"store_url \(JOURNAL_STORE_URL\)"),
        ("JOURNAL_MEMORY_BUDGET", "-5", r"memory_budget \(JOURNAL_MEMORY_BUDGET\)"),
    ],
)
def test_bad_values_name_their_variable(variable, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        JournalConfig.from_env({variable: value})
    assert isinstance(caught.value, JournalError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head_bytes": 1.5},
        {"shards": 0},
        {"checkpoint_interval": -1},
        {"sweep_interval": float("nan")},
        {"stream_limits": {"thoughts": (1, -1)}},
        {"stream_limits": {"": (1, 1)}},
        {"stream_limits": [("a", (1, 1))]},
        {"head_bytes": True},
    ],
)
def test_bad_keywords_raise_at_construction(kwargs):
    with pytest.raises(ConfigError):
        JournalConfig(**kwargs)


def test_config_is_immutable():
    config = JournalConfig(stream_limits={"thoughts": (1, 2)})
    with pytest.raises(AttributeError):
        config.head_bytes = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.stream_limits["thoughts"] = (3, 4)  # type: ignore[index]
    assert config.replace(head_bytes=7).head_bytes == 7


def test_highlight_rules_per_stream_from_keywords_and_environment():
    from journal import HighlightRules

    config = JournalConfig.from_env({
        "JOURNAL_HIGHLIGHT_PATTERNS": "error, fatal",
        "JOURNAL_HIGHLIGHT_BUDGET": "2048",
        "JOURNAL_HIGHLIGHT_LINE_LIMIT": "100",
        "JOURNAL_STREAM_HIGHLIGHTS": "stderr=error|warning,stdin=",
    })
    assert config.highlights_for("stdout") == HighlightRules(["error", "fatal"], 2048, 100)
    assert config.highlights_for("stderr") == HighlightRules(["error", "warning"], 2048, 100)
    assert config.highlights_for("stdin") is None
    assert JournalConfig(highlight_budget=0).highlights_for("stdout") is None
    assert JournalConfig().highlights_for("x") == HighlightRules()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"highlight_budget": 100}, r"highlight_budget \(JOURNAL_HIGHLIGHT_BUDGET\) must be 0 \(off\) or at least twice"),
        ({"highlight_line_limit": 0}, r"highlight_line_limit .* must be >= 1"),
        ({"highlight_patterns": "error"}, r"highlight_patterns .* must be a list"),
        ({"highlight_patterns": ["x" * 65]}, r"highlight_patterns .* 1 to 64 bytes"),
        ({"stream_highlights": {"err": ["a\nb"]}}, r"stream_highlights .*\['err'\]: .*newline"),
        ({"stream_highlights": {"": ["a"]}}, r"stream_highlights .* bad stream name"),
    ],
)
def test_bad_highlight_settings_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        JournalConfig(**fields)


# -- bounds: no value may overflow the arithmetic or the waits made with it ------

TEN_YEARS = 10 * 365 * 86400


@pytest.mark.parametrize("name", ["result_ttl", "lease_timeout", "reattach_grace",
                                  "checkpoint_interval", "sweep_interval"])
@pytest.mark.parametrize("value", [1e308, float("inf"), pytest.param(10**400, id="10**400"), TEN_YEARS + 1,
                                   threading.TIMEOUT_MAX])
def test_seconds_fields_are_bounded_by_ten_years(name, value):
    with pytest.raises(ConfigError, match=rf"JournalConfig.{name} \(JOURNAL_{name.upper()}\) "
                                          r"must be .*at most 10 years"):
        JournalConfig(**{name: value})


@pytest.mark.parametrize("name", ["result_ttl", "lease_timeout", "reattach_grace",
                                  "checkpoint_interval", "sweep_interval"])
def test_seconds_fields_up_to_ten_years_are_kept(name):
    assert getattr(JournalConfig(**{name: TEN_YEARS}), name) == TEN_YEARS


@pytest.mark.parametrize("value", ["1e308", "inf", "-inf", "nan", "1e400", str(TEN_YEARS * 2)])
def test_seconds_from_the_environment_name_the_variable(value):
    with pytest.raises(ConfigError, match=r"sweep_interval \(JOURNAL_SWEEP_INTERVAL\)"):
        JournalConfig.from_env({"JOURNAL_SWEEP_INTERVAL": value})


def test_zero_still_turns_the_sweep_timer_off():
    assert JournalConfig(sweep_interval=0).sweep_interval == 0
    assert JournalConfig.from_env({"JOURNAL_SWEEP_INTERVAL": "0"}).sweep_interval == 0


def test_a_huge_sweep_interval_can_no_longer_kill_the_maintenance_thread():
    # Refused at construction, so no timer ever waits on it.
    from journal import TaskJournal

    with pytest.raises(ConfigError, match="sweep_interval"):
        TaskJournal("memory://", config=JournalConfig(sweep_interval=1e308))


@pytest.mark.parametrize(("fields", "message"), [
    ({"head_bytes": 2**40 + 1}, r"head_bytes \(JOURNAL_HEAD_BYTES\) must be <= 1099511627776"),
    ({"tail_bytes": 10**30}, r"tail_bytes \(JOURNAL_TAIL_BYTES\) must be <= 1099511627776"),
    ({"stream_limits": {"x": (1, 2**41)}}, r"stream_limits\['x'\] \(JOURNAL_STREAM_LIMITS\) must be <= 1099511627776"),
    ({"stream_limits": {"std\ud800": (1, 1)}}, r"stream_limits .*UTF-8"),
    ({"memory_budget": 2**63}, r"memory_budget \(JOURNAL_MEMORY_BUDGET\) must be <= "),
    ({"shards": 2**40}, r"shards \(JOURNAL_SHARDS\) must be <= 65536"),
    ({"highlight_budget": 2**63}, r"highlight_budget \(JOURNAL_HIGHLIGHT_BUDGET\) must be <= "),
    ({"highlight_line_limit": 2**63}, r"highlight_line_limit \(JOURNAL_HIGHLIGHT_LINE_LIMIT\) "),
])
def test_size_fields_are_bounded(fields, message):
    with pytest.raises(ConfigError, match=message):
        JournalConfig(**fields)


def test_size_bounds_from_the_environment():
    with pytest.raises(ConfigError, match=r"JOURNAL_HEAD_BYTES\) must be <= "):
        JournalConfig.from_env({"JOURNAL_HEAD_BYTES": str(10**20)})
    with pytest.raises(ConfigError, match=r"JOURNAL_SHARDS\) must be <= "):
        JournalConfig.from_env({"JOURNAL_SHARDS": str(2**40)})
