"""Names every layer shares: the Docker labels on what a lab creates, its service names,
and the states a trade goes through.

    from tradelab.const import LABEL_PROJECT, LABEL_SERVICE, ALL_SERVICES, TradeStatus
    client.containers.list(filters={"label": [f"{LABEL_PROJECT}=tradelab"]})

As compose's `const.py`: each label is spelt once, here. Compose's own labels are
used on purpose, so `docker compose ps` lists a lab `tradelab up` made.
"""

from __future__ import annotations

from enum import StrEnum

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_CONTAINER_NUMBER = "com.docker.compose.container-number"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_NETWORK = "com.docker.compose.network"
LABEL_VOLUME = "com.docker.compose.volume"
# Our own hash, not compose's (which hashes its own model): a user's `docker compose up`
# then recreates tradelab's containers once, and `tradelab up` recreates compose's.
LABEL_CONFIG_HASH = "tradelab.config-hash"
# Compose lists (and so replaces) only containers carrying its hash label: without it a
# `docker compose up` after `tradelab up` would fail on a container name already in use.
LABEL_COMPOSE_CONFIG_HASH = "com.docker.compose.config-hash"
LABEL_VERSION = "tradelab.version"
# On the app image: a hash of its build context, so either `up` or compose can reuse it.
LABEL_CONTEXT_HASH = "org.tradelab.context-hash"

# Every service a lab can run, in start order (the Stack holds those the settings pick).
ALL_SERVICES = (
    "postgres", "migrate", "api", "engine", "prometheus", "alertmanager", "grafana",
    "loki", "promtail", "alloy", "locust-master", "locust-worker",
)
# Services with no binary off Docker: the local runtime reports them unavailable.
DOCKER_ONLY_SERVICES = ("grafana", "loki", "promtail", "alloy")


class TradeStatus(StrEnum):
    """A trade's status, as the trades table's CHECK constraint spells it:
    NEW, then FILLED, REJECTED or FAILED once the engine settled it."""

    NEW = "NEW"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
