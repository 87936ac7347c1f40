"""Command line: serve, check-config, sim, demo, status, mode, backends, top, hold, stats, migrate-ollama."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ollamaproxy import __version__, eventloop
from ollamaproxy.config import ConfigError, default_config_path, load_config
from ollamaproxy.logsetup import setup_logging

EXIT_CONFIG = 2


def _cmd_serve(args: argparse.Namespace) -> int:
    from ollamaproxy.service import resolve_config, serve

    setup_logging(args.log_level)
    try:
        config, origin = resolve_config(args.config)
    except ConfigError as error:
        _print_config_error(error)
        return EXIT_CONFIG
    from ollamaproxy.desktop.service import NameTakenError

    try:
        eventloop.run(serve(config, origin, config_path=args.config or _existing_default()))
    except NameTakenError as error:
        print(f"ollamaproxy: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a management address that is not loopback, and the like
        print(f"ollamaproxy: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as error:
        print(f"ollamaproxy: cannot listen on {config.server.listen}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


def _existing_default() -> str | None:
    path = default_config_path()
    return str(path) if path.exists() else None


def _print_config_error(error: ConfigError) -> None:
    print(f"{error.source}: invalid configuration", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem}", file=sys.stderr)


def _cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else default_config_path()
    try:
        config = load_config(path)
    except ConfigError as error:
        _print_config_error(error)
        return EXIT_CONFIG
    backends = ", ".join(f"{b.id} ({b.kind}, {b.hardware}, {b.url})" for b in config.backends)
    print(f"{path}: OK — listen {config.server.listen}; {len(config.backends)} backend(s): {backends}")
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from ollamaproxy.sim import serve_sim

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        print("ollamaproxy sim: --models needs at least one model name", file=sys.stderr)
        return EXIT_CONFIG
    try:
        eventloop.run(serve_sim(args.host, args.port, args.name, models, args.tokens_per_second, args.watts,
                              kind=args.kind))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"ollamaproxy sim: cannot listen on {args.host}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ollamaproxy.demo import run_demo

    setup_logging(args.log_level)
    try:
        eventloop.run(run_demo(args.port, args.sim_base_port, real_cpu=not args.no_real_cpu))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"ollamaproxy demo: cannot listen: {error.strerror or error} "
              "(is another ollamaproxy or Ollama running? try --port)", file=sys.stderr)
        return 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from ollamaproxy.desktop import client

    return client.status(as_json=args.json)


def _cmd_mode(args: argparse.Namespace) -> int:
    from ollamaproxy.desktop import client

    return client.mode(args.mode, as_json=args.json)


def _cmd_backends(args: argparse.Namespace) -> int:
    from ollamaproxy.desktop import client

    return client.backends(as_json=args.json)


def _cmd_top(args: argparse.Namespace) -> int:
    from ollamaproxy.desktop import client

    return client.top(frames=args.frames)


def _cmd_hold(args: argparse.Namespace) -> int:
    from ollamaproxy.desktop import client

    if not args.held_command:
        args.parser.error("give the command to run after --: ollamaproxy hold MODE [--reason R] -- COMMAND...")
    return client.hold(args.mode, args.held_command, reason=args.reason, app_id=args.app_id, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollamaproxy", description="Route local AI inference across backends.")
    parser.add_argument("--version", action="version", version=f"ollamaproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the router")
    serve.add_argument("--config", metavar="PATH", help=f"TOML config (default {default_config_path()})")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file and print its problems")
    check.add_argument("path", nargs="?", help=f"TOML config (default {default_config_path()})")
    check.set_defaults(func=_cmd_check_config)

    sim = sub.add_parser("sim", help="run a simulated Ollama + OpenAI-compatible backend")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, required=True)
    sim.add_argument("--name", default="sim")
    sim.add_argument("--models", default="llama3.2:1b", help="comma-separated model names")
    sim.add_argument("--tokens-per-second", type=float, default=50.0)
    sim.add_argument("--watts", type=float, default=10.0)
    sim.add_argument("--kind", choices=["ollama", "openai"], default="ollama")
    sim.set_defaults(func=_cmd_sim)

    demo = sub.add_parser("demo", help="four simulated backends (npu, igpu, nvidia, cpu) behind the router")
    demo.add_argument("--port", type=int, default=11434, help="router port (default 11434)")
    demo.add_argument("--sim-base-port", type=int, default=11441, help="first of four simulator ports")
    demo.add_argument("--no-real-cpu", action="store_true",
                      help="simulate cpu0 too instead of running llama.cpp (needs ollamaproxy[demo])")
    demo.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(func=_cmd_demo)

    # the D-Bus client commands talk to the running service on the session bus (exit 3: not running)
    status = sub.add_parser("status", help="one screen: mode, power, temperatures, queue and backends")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    mode = sub.add_parser("mode", help="show the efficiency mode, or set it")
    mode.add_argument("mode", nargs="?", help="performance | balanced | efficiency | quiet | ultra-efficiency | auto")
    mode.add_argument("--json", action="store_true", help="machine-readable output")
    mode.set_defaults(func=_cmd_mode)

    backends = sub.add_parser("backends", help="each backend's health, load and breaker")
    backends.add_argument("--json", action="store_true", help="machine-readable output")
    backends.set_defaults(func=_cmd_backends)

    top = sub.add_parser("top", help="a live view of status, redrawn on every change the service announces")
    top.add_argument("--frames", type=int, default=None, help="stop after this many screens")
    top.set_defaults(func=_cmd_top)

    hold = sub.add_parser("hold", help="hold a mode while a command runs: hold MODE [--reason R] -- COMMAND...",
                          usage="%(prog)s MODE [--reason R] [--app-id A] [--json] -- COMMAND...")
    hold.add_argument("mode", help="the mode to hold while COMMAND runs")
    hold.add_argument("--reason", default="", help="why (shown with the hold)")
    hold.add_argument("--app-id", default="", help="who holds it (default: the command's name)")
    hold.add_argument("--json", action="store_true", help="print the hold and the command's exit code as JSON")
    hold.set_defaults(func=_cmd_hold, parser=hold, held_command=[])

    from ollamaproxy.commands import migrate, stats

    stats.add_parser(sub)
    migrate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    held_command = None
    if argv[:1] == ["hold"] and "--" in argv:  # everything after -- is the held command, untouched
        cut = argv.index("--")
        argv, held_command = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if held_command is not None:
        args.held_command = held_command
    return args.func(args)


__all__ = ["main", "build_parser"]
