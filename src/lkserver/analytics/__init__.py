"""Sessions analytics: a recorder on the event stream and LiveKit Cloud's Analytics API over it."""

from .http import PREFIX, AnalyticsApi
from .recorder import SessionRecorder

__all__ = ["PREFIX", "AnalyticsApi", "SessionRecorder"]
