"""`okrstream`: up, token, demo, replay, audit, schemas. Each command imports what it needs."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

ORG_MAX_CHARS = 100  # an organisation id, as the contracts and TokenStore.create bound it


def _up(args: argparse.Namespace) -> int:
    from services.supervisor.up import main

    return main()


def _token_create(args: argparse.Namespace) -> int:
    from services.auth.tokens import SCOPES, TokenStore
    from services.settings import load_settings

    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        print(
            f"okrstream: unknown scopes {unknown}; choose from {','.join(SCOPES)}", file=sys.stderr
        )
        return 2
    if not args.org or len(args.org) > ORG_MAX_CHARS:
        # Checked before the store is opened (or created), as TokenStore.create checks it.
        print(
            f"okrstream: --org must be 1–{ORG_MAX_CHARS} characters (got {len(args.org)})",
            file=sys.stderr,
        )
        return 2
    store = TokenStore.from_settings(load_settings())
    try:
        token = store.create(args.org, scopes)
    except ValueError as exc:  # any other rule of the store's: one line, not a traceback
        print(f"okrstream: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(token)
    return 0


def _positive_rate(text: str) -> float:
    """demo --rate: readings per second, a finite number above 0."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise argparse.ArgumentTypeError(f"must be above 0 readings per second, not {text}")
    return rate


def _demo(args: argparse.Namespace) -> int:
    from services.demo.main import run

    return run(args)


def _replay(args: argparse.Namespace) -> int:
    from services.processor.replay import main

    return main()


def _audit_verify(args: argparse.Namespace) -> int:
    from services.audit.main import verify

    return verify(args.expect_head)


def _audit_export(args: argparse.Namespace) -> int:
    from services.audit.main import export

    return export(args.objective)


def _schemas(args: argparse.Namespace) -> int:
    from services.cli.schemas import check, write

    return write() if args.action == "write" else check()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="okrstream", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "up", help="start the embedded stack (broker, relay, processor, API)"
    ).set_defaults(run=_up)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="print a new token (and nothing else)")
    create.add_argument("--org", required=True, help="the organisation the token belongs to")
    create.add_argument("--scopes", default="read", help="comma-separated: read,write,ingest")
    create.set_defaults(run=_token_create)

    demo = sub.add_parser("demo", help="seed a believable organisation and stream readings")
    demo.add_argument("--url", default=None, help="front door (default: from OKR_HTTP_PORT)")
    demo.add_argument("--token", default=None, help="a token with read,write,ingest scopes")
    demo.add_argument("--org", default="demo", help="organisation for a new token")
    demo.add_argument(
        "--rate", type=_positive_rate, default=20.0, help="readings per second to stream"
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="seconds to stream (default: forever)"
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed")
    demo.set_defaults(run=_demo)

    replay = sub.add_parser("replay", help="rebuild every projection from the log and swap it in")
    replay.set_defaults(run=_replay)

    audit = sub.add_parser("audit", help="tamper evidence").add_subparsers(
        dest="action", required=True
    )
    check = audit.add_parser(
        "verify", help="check every stream's hash chain and the log's seals; print the head"
    )
    check.add_argument(
        "--expect-head",
        metavar="POSITION:DIGEST",
        help="a head printed by an earlier verify: fail if the log up to it changed",
    )
    check.set_defaults(run=_audit_verify)
    export = audit.add_parser("export", help="an objective's full history as JSON lines")
    export.add_argument("--objective", required=True, help="objective id")
    export.set_defaults(run=_audit_export)

    schemas = sub.add_parser("schemas", help="JSON Schemas of contracts/ (write or check)")
    schemas.add_argument("action", choices=["write", "check"])
    schemas.set_defaults(run=_schemas)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from services.eventstore.store import StoreUnavailableError
    from services.projectionstore.db import DatabaseUnavailableError

    try:
        sys.exit(args.run(args))
    except (StoreUnavailableError, DatabaseUnavailableError) as exc:
        print(f"okrstream: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
