"""Errors of the service layer: each a :class:`SealkeepError` with its exit-code family."""

from __future__ import annotations

from ...errors import EXIT_AUTH, EXIT_GENERIC, EXIT_STORAGE, EXIT_USAGE, SealkeepError


class LoginFailed(SealkeepError):
    """A wrong user name or password (which of the two is never said)."""

    exit_code = EXIT_AUTH


class NotLoggedIn(SealkeepError):
    """No session, an expired one, or an unknown API token."""

    exit_code = EXIT_AUTH


class Forbidden(SealkeepError):
    """The user is logged in but holds no role that allows this."""

    exit_code = EXIT_AUTH


class TooManyAttempts(SealkeepError):
    """Logins are throttled for this user or address; ``retry_after`` seconds to wait."""

    exit_code = EXIT_AUTH

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AddressRefused(SealkeepError):
    """The client's address is outside the IP allowlist."""

    exit_code = EXIT_AUTH


class BadInput(SealkeepError):
    """A request whose values are malformed: the message says which and why."""

    exit_code = EXIT_USAGE


class NotFound(SealkeepError):
    """No such user, job or set."""

    exit_code = EXIT_STORAGE


class Conflict(SealkeepError):
    """The request clashes with what exists (a user name taken, a job already running)."""

    exit_code = EXIT_GENERIC
