"""Runners per runtime behind one interface (:class:`Backend`)."""
from tuckertrt.backends.base import Backend

__all__ = ["Backend"]
