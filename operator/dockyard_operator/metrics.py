"""The operator's Prometheus metrics, served on /metrics (`dockyard_common.metrics`).

Counters of decisions (scheduling, evictions, volume moves, image pins) and the latency
a user feels (a Container's creation to its binding); node readiness as a gauge. They
live in prometheus_client's default registry: one operator per process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SCHEDULING = Counter(
    "dockyard_scheduling_attempts_total",
    "Attempts to bind a Container to a node, by result: scheduled, unschedulable, "
    "waiting_for_image.", ["result"])
BINDING_LATENCY = Histogram(
    "dockyard_scheduling_latency_seconds",
    "From a Container's creation to its binding to a node.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
NODE_READY = Gauge(
    "dockyard_node_ready", "1 when the node's heartbeat is fresh, 0 when it is lost.",
    ["node"])
EVICTIONS = Counter(
    "dockyard_node_evictions_total",
    "Containers taken off lost nodes, by action: reschedule, fail.", ["action"])
VOLUME_MOVES = Counter(
    "dockyard_volume_migrations_total",
    "Local volumes marked Migrating to follow a consumer to another node.")
IMAGE_PINS = Counter(
    "dockyard_image_pins_total",
    "Image tags resolved to digests, by result: pinned, failed.", ["result"])

