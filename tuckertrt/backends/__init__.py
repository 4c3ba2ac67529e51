"""Runners per runtime behind one interface (:class:`Backend`)."""
from tuckertrt.backends.base import Backend
from tuckertrt.backends.registry import available_backends, open_backend

__all__ = ["Backend", "available_backends", "open_backend"]
