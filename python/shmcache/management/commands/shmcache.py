"""``manage.py shmcache COMMAND [ALIAS] [ARGS...]``: ``python -m shmcache
COMMAND LOCATION ARGS...`` on the LOCATION of a CACHES alias ("default"
unless ALIAS names one), e.g. ``manage.py shmcache stats``, ``manage.py
shmcache top sessions --interval 2``, ``manage.py shmcache dump default
/var/backups/cache.snap``; ``manage.py shmcache resize [ALIAS] [SIZE]``
migrates the live cache to SIZE, or to the alias's OPTIONS without one."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import __main__ as cli
from ..._options import check_location
from ...checks import BACKEND, is_shmcache_backend, is_tiered_backend

COMMANDS = ("stats", "verify", "clear", "dump", "load", "destroy", "top", "resize")
# Those that take no other positional argument: their ALIAS argument, if
# any, must be an alias (a typo is an error, not a file name).
NO_POSITIONALS = ("stats", "verify", "clear", "destroy", "top")


class Command(BaseCommand):
    help = __doc__
    # No system checks first: Django's own would open every cache alias,
    # creating segments (a `destroy` then `stats` would find a fresh cache),
    # and an admin tool must work while another alias is misconfigured.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("subcommand", choices=COMMANDS, help="what to do (python -m shmcache COMMAND)")
        parser.add_argument(
            "rest",
            nargs=argparse.REMAINDER,
            help="[ALIAS] then the command's own arguments (python -m shmcache COMMAND --help)",
        )

    def handle(self, *args: Any, subcommand: str, rest: list[str], **options: Any) -> None:
        caches = settings.CACHES
        alias = DEFAULT_CACHE_ALIAS
        if rest and rest[0] in caches:
            alias, rest = rest[0], rest[1:]
        elif rest and not rest[0].startswith("-") and subcommand in NO_POSITIONALS:
            raise CommandError(f"no CACHES alias {rest[0]!r}; aliases: {', '.join(sorted(caches))}")
        conf = caches.get(alias)
        if conf is None:
            raise CommandError(f"no CACHES alias {alias!r}; aliases: {', '.join(sorted(caches))}")
        if not is_shmcache_backend(conf.get("BACKEND")):
            raise CommandError(
                f"CACHES[{alias!r}] has BACKEND {conf.get('BACKEND')!r}, not {BACKEND}: "
                "manage.py shmcache works on shmcache aliases only"
            )
        try:
            location = check_location(conf.get("LOCATION", ""))
            if is_tiered_backend(conf.get("BACKEND")):
                from ...tiered import l1_location

                location = l1_location(location, conf.get("KEY_PREFIX", "") or "")  # the L1 segment
        except ValueError as e:
            raise CommandError(f"CACHES[{alias!r}]: {e}") from e
        if subcommand == "resize" and (not rest or rest[0].startswith("-")):
            # No SIZE given: the alias's own OPTIONS (apply settings now).
            opts = conf.get("OPTIONS", {}) or {}
            rest = [str(opts.get("SIZE", "64MB")), "--max-item-size", str(opts.get("MAX_ITEM_SIZE", "1MB")), *rest]
            if opts.get("SHARDS"):
                rest += ["--shards", str(opts["SHARDS"])]
        with contextlib.redirect_stdout(self.stdout._out), contextlib.redirect_stderr(self.stderr._out):
            try:
                rc = cli.main([subcommand, location, *rest])
            except SystemExit as e:  # argparse's usage errors
                rc = e.code if isinstance(e.code, int) else 2
        if rc:
            raise CommandError(f"shmcache {subcommand} on CACHES[{alias!r}] (LOCATION {location!r}) failed", returncode=rc)
