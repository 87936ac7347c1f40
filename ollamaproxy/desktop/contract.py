"""Names of the ie.fio.OllamaProxy D-Bus contract (dbus/ie.fio.OllamaProxy.xml is the source of truth)."""

BUS_NAME = "ie.fio.OllamaProxy"
OBJECT_PATH = "/ie/fio/OllamaProxy"

EFFICIENCY = "ie.fio.OllamaProxy.Efficiency"
BACKENDS = "ie.fio.OllamaProxy.Backends"
ROUTING = "ie.fio.OllamaProxy.Routing"
THERMAL = "ie.fio.OllamaProxy.Thermal"
SYSTEM_STATE = "ie.fio.OllamaProxy.SystemState"
INTERFACES = (EFFICIENCY, BACKENDS, ROUTING, THERMAL, SYSTEM_STATE)

ERROR_INVALID_MODE = "ie.fio.OllamaProxy.Error.InvalidMode"
ERROR_NO_SUCH_HOLD = "ie.fio.OllamaProxy.Error.NoSuchHold"
ERROR_NOT_HOLDER = "ie.fio.OllamaProxy.Error.NotHolder"
ERROR_UNKNOWN_BACKEND = "ie.fio.OllamaProxy.Error.UnknownBackend"

EMITS_CHANGED_SIGNAL = "org.freedesktop.DBus.Property.EmitsChangedSignal"

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
DBUS_INTERFACE = "org.freedesktop.DBus"


def name_owner_rule(name: str | None = None) -> str:
    """Match rule for NameOwnerChanged signals (of one name, or of every name)."""
    rule = (f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_INTERFACE}',"
            f"path='{DBUS_PATH}',member='NameOwnerChanged'")
    return rule if name is None else f"{rule},arg0='{name}'"
