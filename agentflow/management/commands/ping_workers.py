"""Check from the command line that Celery workers consume and beat is alive."""

from __future__ import annotations

import json
import time
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeout
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentflow.server.tasks import echo_context, last_heartbeat


class Command(BaseCommand):
    help = "Round-trip a task through a worker and report beat's last heartbeat (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=10.0)
        parser.add_argument(
            "--require-beat",
            action="store_true",
            help="wait up to --timeout for beat's heartbeat and fail without one",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        try:
            echo_context.delay({"ping": True}).get(timeout=options["timeout"])
        except CeleryTimeout as exc:
            raise CommandError(f"no worker answered within {options['timeout']}s") from exc
        beat = last_heartbeat("beat")
        deadline = started + options["timeout"]
        while options["require_beat"] and beat is None and time.monotonic() < deadline:
            time.sleep(0.2)
            beat = last_heartbeat("beat")
        if options["require_beat"] and beat is None:
            raise CommandError(f"no heartbeat from celery beat within {options['timeout']}s")
        report = {
            "worker_round_trip_ms": round((time.monotonic() - started) * 1000, 1),
            "beat_last_heartbeat_age_s": None if beat is None else round(time.time() - beat, 1),
        }
        self.stdout.write(json.dumps(report))
