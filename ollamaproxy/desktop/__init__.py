"""Desktop integration: the ie.fio.OllamaProxy D-Bus service, the UPower follower, notifications and the D-Bus CLI client."""
