"""The one way taskq makes Prometheus metrics: a ``MetricSet`` declares them and makes them on a registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Generic, TypeVar, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)


class Metric(Generic[M]):
    """One metric a ``MetricSet`` declares: its kind, name, help text, labels and options."""

    def __init__(
        self, kind: type[M], name: str, documentation: str, labels: str, **options: Any
    ) -> None:
        # Made by each MetricSet on its own registry: ``make(registry=...)``.
        self.make: Callable[..., M] = partial(
            kind, name, documentation, tuple(labels.split()), **options
        )

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Metric[M]: ...
    @overload
    def __get__(self, instance: MetricSet, owner: type[Any]) -> M: ...
    def __get__(self, instance: MetricSet | None, owner: type[Any]) -> Metric[M] | M:
        """Return the declaration (``MetricSet.__init__`` puts the made metric on each instance)."""
        if instance is not None:
            raise AttributeError(f"{owner.__name__} was made without calling MetricSet.__init__")
        return self


def counter(name: str, documentation: str, labels: str = "") -> Metric[Counter]:
    """Declare a counter (exposed as ``<name>_total``) with its space-separated label names."""
    return Metric(Counter, name, documentation, labels)


def gauge(name: str, documentation: str, labels: str = "", **options: Any) -> Metric[Gauge]:
    """Declare a gauge with its space-separated label names; ``options`` go to ``Gauge``."""
    return Metric(Gauge, name, documentation, labels, **options)


def histogram(
    name: str, documentation: str, labels: str = "", *, buckets: Sequence[float]
) -> Metric[Histogram]:
    """Declare a histogram with its space-separated label names and its buckets."""
    return Metric(Histogram, name, documentation, labels, buckets=tuple(buckets))


class MetricSet:
    """A component's metrics, declared as class attributes and made on the registry it is given."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The assembly makes each set once per process on the registry it serves; a set made
        # without one gets a private registry nobody scrapes (tests, one-shot commands).
        self.registry = registry if registry is not None else CollectorRegistry()
        for cls in reversed(type(self).__mro__):
            for attribute, declared in vars(cls).items():
                if isinstance(declared, Metric):
                    # The instance's own attribute wins over the declaration: plain lookups after.
                    self.__dict__[attribute] = declared.make(registry=self.registry)
