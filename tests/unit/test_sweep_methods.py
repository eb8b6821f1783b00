"""RONIN_SWEEP_METHOD picks the sweep processes' block function: connects by default, raw
SYNs when asked (refused with the fix named when the process may not open raw sockets), and
connects for IPv6 whatever was asked."""

from __future__ import annotations

import pytest

from ronin.config import Settings
from ronin.discovery import sweep_methods
from ronin.discovery.connect_sweep import sweep_block
from ronin.discovery.syn_sweep import syn_sweep_block
from ronin.errors import InvalidValue, ScanFailed


def test_the_setting_defaults_to_connect_and_names_a_bad_value() -> None:
    assert Settings.from_env({}).sweep_method == "auto"
    assert Settings.from_env({"RONIN_SWEEP_METHOD": "SYN"}).sweep_method == "syn"
    assert Settings.from_env({"RONIN_SWEEP_METHOD": "auto"}).sweep_method == "auto"
    with pytest.raises(InvalidValue, match="RONIN_SWEEP_METHOD must be one of auto, connect, syn"):
        Settings.from_env({"RONIN_SWEEP_METHOD": "raw"})


@pytest.fixture(params=[True, False], ids=["raw allowed", "raw refused"])
def permitted(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    allowed: bool = request.param
    monkeypatch.setattr(sweep_methods, "syn_permitted", lambda: allowed)
    return allowed


def test_connect_always_connects(permitted: bool) -> None:
    assert sweep_methods.block_function("connect", 4) is sweep_block


def test_auto_sends_syns_only_where_it_may(permitted: bool) -> None:
    expected = syn_sweep_block if permitted else sweep_block
    assert sweep_methods.block_function("auto", 4) is expected


def test_syn_without_raw_sockets_names_the_fix(permitted: bool) -> None:
    if permitted:
        assert sweep_methods.block_function("syn", 4) is syn_sweep_block
        return
    with pytest.raises(ScanFailed, match="CAP_NET_RAW") as raised:
        sweep_methods.block_function("syn", 4)
    assert "RONIN_SWEEP_METHOD=connect" in str(raised.value)


@pytest.mark.parametrize("method", ["auto", "syn", "connect"])
def test_ipv6_connects(permitted: bool, method: sweep_methods.SweepMethod) -> None:
    assert sweep_methods.block_function(method, 6) is sweep_block
