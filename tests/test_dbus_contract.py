"""The running service exports exactly dbus/ie.fio.OllamaProxy.xml, member for member; the activation file names it."""

import configparser
import xml.etree.ElementTree as ET

from dbus_fast import introspection as intr

from desktop_fixtures import *  # noqa: F403
from desktop_fixtures import CONTRACT_XML, ROOT, contract_node, run_tool
from ollamaproxy.desktop import contract

STANDARD = {"org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer", "org.freedesktop.DBus.Properties",
            "org.freedesktop.DBus.ObjectManager"}


def _args(args):
    return [(a.name, a.signature, a.direction.value if a.direction else None) for a in args]


def describe(interface: intr.Interface) -> dict:
    """Everything a client depends on, in comparable form."""
    return {
        "methods": {m.name: {"in": _args(m.in_args), "out": _args(m.out_args)} for m in interface.methods},
        "signals": {s.name: [(a.name, a.signature) for a in s.args] for s in interface.signals},
        "properties": {p.name: {"type": p.signature, "access": p.access.value, "annotations": p.annotations}
                       for p in interface.properties},
    }


def test_contract_file_is_well_formed_and_complete():
    root = ET.parse(CONTRACT_XML).getroot()
    assert root.get("name") == contract.OBJECT_PATH
    node = contract_node()
    assert [i.name for i in node.interfaces] == list(contract.INTERFACES)
    for interface in node.interfaces:
        for prop in interface.properties:
            assert prop.annotations.get(contract.EMITS_CHANGED_SIGNAL) in ("true", "const", "invalidates", "false"), \
                f"{interface.name}.{prop.name} must state EmitsChangedSignal"
        for member in [*interface.methods, *interface.signals]:
            args = [*member.in_args, *member.out_args] if isinstance(member, intr.Method) else member.args
            assert all(arg.name for arg in args), f"{interface.name}.{member.name}: every argument is named"


async def test_running_service_matches_the_contract_member_for_member(desktop_router, dbus_client):
    live = await dbus_client.introspect(contract.BUS_NAME, contract.OBJECT_PATH)
    live_interfaces = {i.name: i for i in live.interfaces}
    assert set(live_interfaces) - STANDARD == set(contract.INTERFACES)
    for expected in contract_node().interfaces:
        assert describe(live_interfaces[expected.name]) == describe(expected), expected.name


async def test_introspection_as_gdbus_shows_it(desktop_router):
    out = (await run_tool("gdbus", "introspect", "--session", "--dest", contract.BUS_NAME,
                          "--object-path", contract.OBJECT_PATH)).stdout
    assert "readwrite s Mode = 'balanced';" in out
    assert '@org.freedesktop.DBus.Property.EmitsChangedSignal("const")' in out
    assert "ModeChanged(s old," in out and "HoldMode(in  s mode," in out


def test_activation_file_names_the_service():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "dbus" / "ie.fio.OllamaProxy.service")
    section = parser["D-BUS Service"]
    assert section["Name"] == contract.BUS_NAME
    assert section["Exec"].startswith("/") and section["Exec"].endswith("ollamaproxy serve")
    assert section["SystemdService"] == "ollamaproxy.service"
