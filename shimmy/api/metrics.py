"""Prometheus metrics at /metrics.

Each app gets its own registry (no process-wide default registry), so several
servers in one process, as in tests, never mix their counts. Request counts
come from an ASGI middleware; token counts and latencies from the manager's
finish listener; queue depth, busy slots and memory are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shimmy.models.generation import Generation
from shimmy.models.manager import ModelManager


class Metrics:
    """The counters and histograms of one app, fed by :class:`MetricsMiddleware`
    and the manager's finish listener."""

    def __init__(self, manager: ModelManager) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shimmy_requests",
            "API requests by listener (api, or ollama for --ollama), endpoint and status",
            ["listener", "method", "endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "shimmy_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "shimmy_completion_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.generations = Counter(
            "shimmy_generations",
            "Finished generations by finish reason",
            ["model", "finish_reason"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "shimmy_time_to_first_token_seconds",
            "From request to first generated token",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.token_latency = Histogram(
            "shimmy_token_latency_seconds",
            "Time between generated tokens (observed once per token)",
            ["model"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
            registry=self.registry,
        )
        self.registry.register(_LiveState(manager))
        manager.add_finish_listener(self.observe)

    def observe(self, generation: Generation) -> None:
        model = generation.model
        self.prompt_tokens.labels(model).inc(generation.prompt_tokens)
        self.completion_tokens.labels(model).inc(generation.completion_tokens)
        self.generations.labels(model, generation.finish_reason or "unknown").inc()
        ttft = generation.time_to_first_token
        if ttft is not None:
            self.time_to_first_token.labels(model).observe(ttft)
        n = generation.completion_tokens
        if n >= 2 and generation.first_token_at and generation.finished_at:
            # The engine keeps no per-token timestamps; each gap is observed at
            # the generation's mean, so counts and sums stay exact.
            mean = (generation.finished_at - generation.first_token_at) / (n - 1)
            histogram = self.token_latency.labels(model)
            for _ in range(n - 1):
                histogram.observe(mean)


class _LiveState(Collector):
    """Gauges read from the manager at scrape time."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        stats = self.manager.stats()
        queued = GaugeMetricFamily(
            "shimmy_queue_depth", "Requests waiting for a slot", labels=["model"]
        )
        busy = GaugeMetricFamily("shimmy_slots_busy", "Slots generating", labels=["model"])
        slots = GaugeMetricFamily("shimmy_slots", "Slots of each loaded model", labels=["model"])
        memory = GaugeMetricFamily(
            "shimmy_model_memory_bytes",
            "Weights and KV cache of each loaded model",
            labels=["model"],
        )
        saved = GaugeMetricFamily(
            "shimmy_saved_prompts",
            "Conversations kept in host memory (--cache-ram)",
            labels=["model"],
        )
        saved_bytes = GaugeMetricFamily(
            "shimmy_saved_prompt_bytes", "Bytes of the saved conversations", labels=["model"]
        )
        reused = CounterMetricFamily(
            "shimmy_saved_prompt_hits",
            "Prompts restored from a saved conversation instead of decoded again",
            labels=["model"],
        )
        drafted = CounterMetricFamily(
            "shimmy_spec_drafted_tokens",
            "Tokens drafted from the requests' own text or earlier replies (speculative decoding)",
            labels=["model"],
        )
        accepted = CounterMetricFamily(
            "shimmy_spec_accepted_tokens",
            "Drafted tokens the model produced itself",
            labels=["model"],
        )
        replayed = CounterMetricFamily(
            "shimmy_spec_replayed_tokens",
            "Accepted drafted tokens that came from the model's earlier replies",
            labels=["model"],
        )
        for model in stats.loaded:
            drafted.add_metric([model.name], model.drafted_tokens)
            accepted.add_metric([model.name], model.accepted_tokens)
            replayed.add_metric([model.name], model.replayed_tokens)
            queued.add_metric([model.name], model.queued)
            busy.add_metric([model.name], model.slots_busy)
            slots.add_metric([model.name], model.slots)
            memory.add_metric([model.name], model.memory_bytes)
            saved.add_metric([model.name], model.saved_prompts)
            saved_bytes.add_metric([model.name], model.saved_prompt_bytes)
            reused.add_metric([model.name], model.saved_prompt_hits)
        yield from (
            queued,
            busy,
            slots,
            memory,
            saved,
            saved_bytes,
            reused,
            drafted,
            accepted,
            replayed,
        )
        yield GaugeMetricFamily("shimmy_models_loaded", "Loaded models", value=len(stats.loaded))
        yield GaugeMetricFamily(
            "shimmy_process_resident_bytes", "Process RSS", value=stats.rss_bytes
        )


class MetricsMiddleware:
    """Counts every HTTP request and WebSocket by route template and final status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, listener: str = "api") -> None:
        self.app = app
        self.metrics = metrics
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = 500 if scope["type"] == "http" else 101

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.metrics.requests.labels(
                self.listener, scope.get("method", "WS"), _endpoint(scope), str(status)
            ).inc()


def _endpoint(scope: Scope) -> str:
    """The route's path template, so /v1/models/{id} is one label, not one per id;
    unknown paths share one label to keep the label set bounded."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", scope["path"]))
    return "other"
