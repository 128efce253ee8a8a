"""A node agent's Prometheus metrics, served on /metrics with `dockyard agent
--metrics-listen HOST:PORT`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONTAINERS = Gauge(
    "dockyard_agent_containers", "The Containers bound to this node, by phase.", ["phase"])
PASSES = Histogram(
    "dockyard_agent_converge_seconds", "How long one convergence pass took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ACTIONS = Counter(
    "dockyard_agent_actions_total",
    "Containers created, replaced, started and removed, by verb and result.",
    ["verb", "result"])
RENEWALS = Counter(
    "dockyard_agent_lease_renewals_total", "Heartbeats, by result: renewed, failed.",
    ["result"])
FENCED = Counter(
    "dockyard_agent_fenced_total",
    "Containers killed at start because their Container was bound elsewhere meanwhile.")
FAILED_PASSES = Counter(
    "dockyard_agent_converge_failures_total",
    "Convergence passes that failed, by cause: `io` (the daemon or the API server failed "
    "the request) or `bug` (anything else; logged with its traceback).", ["cause"])
WATCH_MISSED = Counter(
    "dockyard_agent_watch_missed_total",
    "Bound Containers that a resync found and the watch did not show for a whole resync "
    "period (the watch lost their events).")
