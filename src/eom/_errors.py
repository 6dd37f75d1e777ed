"""Exception types. Every one is a ValueError subclass so callers can catch one type."""


class EomError(ValueError):
    """Base class of eom's input and run-time errors; the message names the fix."""


class DivergenceError(EomError):
    """The loss or the parameters became non-finite (the learning rate is too large)."""


class UnsupportedOrderError(EomError):
    """The requested truncation order is outside what eom supports."""
