"""The TypedDicts of results match what the real daemon answers: every key a class requires is
there, no key is there that the class does not declare, and each value has the declared type
(`Optional` only where the daemon really sends nil). Answers come from a daemon with tiers, a
stored key, metered chats through a mock provider, and an account that is logged out.
"""

import collections.abc
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

import pytest

import llm_sidecar as ls
from llm_sidecar import Client

from conftest import Daemon
from test_daemon_chat import MESSAGES, MODEL, MockProvider, mock  # noqa: F401 (the `mock` fixture)


def check(value: Any, tp: Any, where: str = "result") -> None:
    """Asserts `value` has type `tp` (TypedDicts, List, Dict, Optional/Union, Literal, scalars)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return
    if typing.is_typeddict(tp) if sys.version_info >= (3, 10) else hasattr(tp, "__required_keys__"):
        assert isinstance(value, dict), f"{where}: expected a map for {tp.__name__}, got {value!r:.200}"
        hints = typing.get_type_hints(tp)
        missing = tp.__required_keys__ - value.keys()
        assert not missing, f"{where}: {tp.__name__} lacks {sorted(missing)}: {value!r:.300}"
        unknown = value.keys() - hints.keys()
        assert not unknown, f"{where}: {tp.__name__} does not declare {sorted(unknown)}: {value!r:.300}"
        for k, v in value.items():
            check(v, hints[k], f"{where}.{k}")
        return
    if origin is Union:
        errors = []
        for alt in typing.get_args(tp):
            try:
                check(value, alt, where)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(f"{where}: {value!r:.200} matches none of {tp}: {errors}")
    if origin is typing.Literal:
        assert value in typing.get_args(tp), f"{where}: {value!r} not one of {typing.get_args(tp)}"
        return
    if origin in (list, List, collections.abc.Sequence):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r:.200}"
        (item,) = typing.get_args(tp)
        for i, v in enumerate(value):
            check(v, item, f"{where}[{i}]")
        return
    if origin in (dict, Dict):
        assert isinstance(value, dict), f"{where}: expected a map, got {value!r:.200}"
        return
    if tp is type(None):
        assert value is None, f"{where}: expected nil, got {value!r:.200}"
        return
    if tp is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: expected a number, got {value!r}"
        return
    if tp is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: expected an int, got {value!r}"
        return
    if isinstance(tp, type):
        assert isinstance(value, tp), f"{where}: expected {tp.__name__}, got {value!r:.200}"
        return
    raise AssertionError(f"{where}: the checker does not know {tp}")


CONFIG = """
[providers.openai]
base_url = "http://127.0.0.1:{port}/v1"
key_env = "MOCK_KEY"

[policy]
default_tier = "pro"

[tiers.pro]
monthly_tokens = 100000
monthly_requests = 100
monthly_cost_usd = 5.0
requests_per_minute = 100
byok = {{ allowed = true, counts_toward_quota = true }}
"""


@pytest.fixture
def typed_daemon(make_daemon: Callable[..., Daemon], mock: MockProvider, tmp_path: Path) -> Daemon:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(port=mock.port))
    return make_daemon(env={"MOCK_KEY": "sk-test-typed"}, args=["--config", str(config)]).start()


def test_results_match_their_typeddicts(typed_daemon: Daemon, mock: MockProvider) -> None:
    with Client(typed_daemon.sock, app="typed-app") as c:
        chat = c.chat(MODEL, MESSAGES)
        check(chat, ls.ChatResult, "chat")
        stream = c.chat(MODEL, MESSAGES, stream=True)
        list(stream)
        check(stream.result, ls.ChatResult, "stream.result")
        mock.slow = True
        cancelled = c.chat(MODEL, MESSAGES, stream=True)
        for _ in cancelled:
            break
        assert cancelled.status == "cancelled"
        check(cancelled.result, ls.ChatResult, "cancelled stream.result")

        check(c.usage_record("openai", "gpt-4o-mini", input_tokens=3, output_tokens=1, app="typed-app"), ls.UsageRecorded)
        records = c.usage_records()
        assert len(records["records"]) == 4  # ok, ok (stream), cancelled, recorded
        assert {r["status"] for r in records["records"]} == {"ok", "cancelled"}
        check(records, ls.UsageRecords, "usage.records")
        summary = c.usage_summary(group_by="model")
        assert summary["groups"] and summary["rows"]
        check(summary, ls.UsageSummary, "usage.summary")
        check(c.usage_summary(period="day", group_by="app"), ls.UsageSummary, "usage.summary day")
        export = c.usage_export()
        assert export["records"]
        check(export, ls.UsageExport, "usage.export")

        quota = c.quota_status()
        assert quota["enabled"] and quota["tier"] == "pro"
        assert {lim["metric"] for lim in quota["limits"]} == {"tokens", "requests", "cost_microusd"}
        assert quota["byok"] is not None
        check(quota, ls.QuotaStatus, "quota.status")
        allowed = c.quota_check(MODEL, estimated_tokens=10)
        assert allowed["allowed"] is True
        check(allowed, ls.QuotaCheck, "quota.check allowed")
        refused = c.quota_check(MODEL, estimated_tokens=10_000_000)
        assert refused["allowed"] is False and refused["error"]["code"] == "quota_exceeded"
        check(refused, ls.QuotaCheck, "quota.check refused")

        check(c.account_status(), ls.AccountStatus, "account.status")
        check(c.account_logout(), ls.AccountLogout, "account.logout")

        c.keys_set("openai", "sk-typed-0000000000001234", label="work")
        keys = c.keys_list()
        assert [k["last4"] for k in keys["keys"]] == ["1234"]
        check(keys, ls.KeysList, "keys.list")
        check(c.vault_status(), ls.VaultStatus, "vault.status")


def test_checker_catches_mismatches() -> None:
    usage = {"input": 1, "output": 2, "cached": 0, "cache_write": 0, "reasoning": 0, "estimated": False}
    check(usage, ls.ChatUsage)
    without_output = {k: v for k, v in usage.items() if k != "output"}
    for bad in ({**usage, "input": None}, without_output, {**usage, "new": 1}, {**usage, "estimated": 1}):
        with pytest.raises(AssertionError):
            check(bad, ls.ChatUsage)
