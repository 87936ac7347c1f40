"""Command line: ollamaproxy serve | check-config | sim | demo."""

from __future__ import annotations

import argparse
import asyncio
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
    try:
        eventloop.run(serve(config, origin))
    except OSError as error:
        print(f"ollamaproxy: cannot listen on {config.server.listen}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


__all__ = ["main", "build_parser"]
