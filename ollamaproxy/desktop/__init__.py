"""Desktop integration: the ie.fio.OllamaProxy D-Bus service, UPower follower, notifications and CLI client."""
