"""The interface every exporter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ._span import Span

__all__ = ("SpanExporter",)


class SpanExporter(ABC):
    """Receives spans as they start and end; subclass it to send traces somewhere new.

    Both methods are called synchronously on the run's own task, so keep them quick (buffer and
    hand off if the destination is slow). An exception they raise is logged once per exporter and
    otherwise ignored: an exporter never breaks a run.
    """

    def on_span_start(self, span: Span) -> None:  # noqa: B027 - optional hook, a no-op unless overridden
        """Called when `span` starts (`status == "running"`). Does nothing unless overridden."""

    @abstractmethod
    def on_span_end(self, span: Span) -> None:
        """Called once when `span` has ended, with its status, duration and data filled in."""
