"""faust's aiokafka transport with a short fetch wait, for freshness.

faust builds its aiokafka consumer with `fetch_max_wait_ms=1500` (hard-coded, no setting).
Against a quiet partition the broker then holds every fetch for 1.5 s, and a reading that
crosses two hops (readings → KR measurements → objective) waited up to 3 s to be visible.
This transport is faust's own with one change: the consumer's fetch wait.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "okrkafka"
FETCH_MAX_WAIT_MS = 20


class PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when the consumer starts and builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class PromptConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> PromptConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = PromptConsumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"


def broker_url(bootstrap: str) -> str:
    """faust's broker URL for `bootstrap` (host:port[,host:port]) with this transport."""
    return ";".join(f"{SCHEME}://{server.strip()}" for server in bootstrap.split(","))
