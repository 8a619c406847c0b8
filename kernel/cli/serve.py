"""`kernel serve`: the kernel over HTTP, with a web console (`kernel.serve`, the `[serve]` extra).

    kernel serve [--plugins DIR] [--host H] [--port N] [--allow-origin URL] [--no-console] [--max-requests N]
    kernel serve hash-key [--generate] [--scheme scrypt|sha256]

`kernel serve` prints where it listens (`--json`: one JSON object) and serves until Ctrl-C
(or `--max-requests` answers). It binds to 127.0.0.1 unless told otherwise; another
address needs API keys in the configuration (`[serve.keys.NAME] hash = "..."`).
`kernel serve hash-key` reads a key on stdin (or makes one with `--generate`) and prints
the line to put in kernel.toml: the key itself is never stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..hookspecs import RegisterCommand, hookimpl
from .common import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, LineReader, UsageError, exit_codes, print_json

if TYPE_CHECKING:
    from ..kernel import Kernel

EPILOG = exit_codes({EXIT_USAGE: "a bad option", EXIT_CONFIG: "configuration error (a non-loopback --host without "
                     "API keys, the [serve] extra missing, the port taken)"})


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    parser = register("serve", cmd_serve, arguments=_arguments, epilog=EPILOG,
                      help="serve the kernel over HTTP: OpenAI-compatible chat, functions, plans, memory, a console",
                      description=__doc__)
    actions = parser.add_subparsers(dest="serve_command", metavar="[hash-key]", title="optional action")
    p = actions.add_parser("hash-key", help="the hash of an API key, for [serve.keys.NAME] in kernel.toml",
                           description="Read an API key on stdin (or make one with --generate) and print its hash, "
                           "the line to put in kernel.toml. The key itself is never stored.",
                           epilog=exit_codes({EXIT_USAGE: "no key given"}))
    p.add_argument("--generate", action="store_true", help="make a new random key (printed once, with its hash)")
    p.add_argument("--scheme", choices=("scrypt", "sha256"), default="scrypt",
                   help="scrypt (salted, slow: for keys people choose) or sha256 (for long random keys)")
    p.add_argument("--name", default="NAME", help="the key's name in the printed [serve.keys.NAME] line")
    p.set_defaults(handler=cmd_hash_key, needs_kernel=False)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to bind (default: serve.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port; 0: any free port (default: serve.port, 8080)")
    parser.add_argument("--allow-origin", dest="origins", action="append", default=[], metavar="URL",
                        help="a web origin allowed by CORS, added to serve.cors_origins; repeatable")
    parser.add_argument("--no-console", action="store_true", help="do not serve the web console at /")
    parser.add_argument("--max-requests", type=int, default=None, metavar="N",
                        help="stop after answering N requests (default: serve until Ctrl-C)")


async def cmd_serve(args: argparse.Namespace, kernel: Kernel) -> int:
    from .. import serve

    settings = kernel.settings.serve.model_copy()
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a port number")
    if args.max_requests is not None and args.max_requests < 1:
        raise UsageError(f"--max-requests {args.max_requests}: must be at least 1")
    if args.origins:
        settings.cors_origins = [*settings.cors_origins, *args.origins]
    if args.no_console:
        settings.console = False
    as_json = bool(getattr(args, "json", False))

    def ready(url: str) -> None:
        served = serve.ServeContext(kernel, settings).served
        functions = sum(1 for fn in kernel.functions() if served(fn))
        facts = {"url": url, "console": f"{url}/" if settings.console else None, "openai_base_url": f"{url}/v1",
                 "openapi": f"{url}/openapi.json", "functions": functions, "keys": len(settings.keys),
                 "models": ["kernel", *settings.agents]}
        if as_json:
            print(json.dumps(facts), flush=True)
            return
        print(f"kernel serve: listening on {url}", flush=False)
        if settings.console:
            print(f"  console   {url}/")
        print(f"  OpenAI    {url}/v1  (model \"kernel\": {functions} functions as tools)")
        print(f"  API       {url}/openapi.json")
        print(f"  keys      {len(settings.keys) or 'none: open to this machine only'}", flush=True)

    await serve.serve(kernel, host=args.host, port=args.port, settings=settings, on_ready=ready,
                      max_requests=args.max_requests)
    return EXIT_OK


async def cmd_hash_key(args: argparse.Namespace, kernel: Kernel | None) -> int:
    from ..serve import generate_key, hash_key

    key: str | None
    if args.generate:
        key = generate_key()
    elif sys.stdin is not None and sys.stdin.isatty():
        import getpass

        key = getpass.getpass("API key: ")
    else:
        key = (await LineReader(sys.stdin).readline()).strip() if sys.stdin is not None else ""
    if not key:
        raise UsageError("no key given: pipe it on stdin (printf %s \"$KEY\" | kernel serve hash-key) or pass "
                         "--generate")
    if not args.name.replace("-", "_").isidentifier() and args.name != "NAME":
        raise UsageError(f"--name {args.name!r}: use letters, digits, '-' and '_'")
    hashed = hash_key(key, args.scheme)
    if getattr(args, "json", False):
        print_json({"name": args.name, "hash": hashed, **({"key": key} if args.generate else {})})
        return EXIT_OK
    if args.generate:
        print(f"key (shown once, give it to the client): {key}")
    print(f"[serve.keys.{args.name}]")
    print(f'hash = "{hashed}"')
    return EXIT_OK
