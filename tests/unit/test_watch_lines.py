"""``ronin watch`` on a terminal: one readable line per change, whatever the change holds."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ronin.cli.watch import line


def shown(change: dict[str, Any]) -> str:
    console = Console(width=300, color_system=None, force_terminal=False)
    with console.capture() as captured:
        console.print(line(change), highlight=False, soft_wrap=True)
    return captured.get().rstrip("\n")


def change(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "cursor": "0000000000000412",
        "type": kind,
        "at": "2026-12-02T14:00:00.123Z",
        "service_id": "did:kos:service:7f3a9c:packages",
        "node_id": "did:kos:griot:7f3a9c",
        **extra,
        "service": {"node_class": "Griot", "endpoint": "http://10.0.0.5:30437/klf"},
    }


def test_a_state_change_shows_from_and_to() -> None:
    assert shown(change("service_state", **{"from": "alive", "to": "gone"})) == (
        "2026-12-02 14:00:00  service_state    did:kos:service:7f3a9c:packages  "
        "did:kos:griot:7f3a9c (Griot)  alive -> gone"
    )


def test_an_addition_or_a_change_shows_the_endpoint_and_a_removal_nothing_more() -> None:
    assert shown(change("service_added")).endswith(
        "service_added    did:kos:service:7f3a9c:packages  did:kos:griot:7f3a9c (Griot)  "
        "http://10.0.0.5:30437/klf"
    )
    assert shown(change("service_changed")).endswith("(Griot)  http://10.0.0.5:30437/klf")
    assert shown(change("service_removed")).endswith("did:kos:griot:7f3a9c (Griot)")


def test_what_a_node_wrote_is_shown_as_written_never_as_markup() -> None:
    odd = change("service_added", service_id="did:kos:service:[bold]x[/]")
    odd["service"]["endpoint"] = "http://h/[red]"
    assert "did:kos:service:[bold]x[/]" in shown(odd)
    assert shown(odd).endswith("http://h/[red]")


def test_a_record_of_a_newer_protocol_still_prints() -> None:
    assert shown({"type": "service_moved", "at": "soon"}).startswith("soon  service_moved")
