"""Publishing jobs: the confirmed publisher, its in-memory twin and their errors."""

from producers.memory import InMemoryPublisher, Published
from producers.publisher import ConfirmedPublisher, Publisher
from producers.settings import PublisherSettings
from topology.errors import ConfirmTimeoutError, PublishError, PublishNackedError, UnroutableError

__all__ = [
    "ConfirmTimeoutError",
    "ConfirmedPublisher",
    "InMemoryPublisher",
    "PublishError",
    "PublishNackedError",
    "Published",
    "Publisher",
    "PublisherSettings",
    "UnroutableError",
]
