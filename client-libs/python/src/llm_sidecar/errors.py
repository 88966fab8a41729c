"""Exceptions: one class per stable error code of the daemon, plus client-side connection errors.

Every exception is a `SidecarError` with `code`, `message` and `data` (always a dict). Branch on
the class (or `code`); read details from `data` (e.g. `RateLimited.data["retry_after_ms"]`).
Codes this library does not know become a plain `SidecarError` with that code.
"""

from typing import Any, Dict, Mapping, Optional, Type


class SidecarError(Exception):
    """An error answered by the daemon (or raised by the client on its behalf)."""

    code: str = "error"

    def __init__(self, message: str, data: Optional[Mapping[str, Any]] = None, code: Optional[str] = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.data: Dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, data={self.data!r})"


class InvalidRequest(SidecarError):
    """Not a valid request (shape, reused msgid)."""

    code = "invalid_request"


class MethodNotFound(SidecarError):
    """No such method; `data["method"]` names it."""

    code = "method_not_found"


class InvalidParams(SidecarError):
    """Params missing, of the wrong type, unknown or out of range."""

    code = "invalid_params"


class Unauthorized(SidecarError):
    """Credentials rejected (wrong passphrase, bad entitlement token)."""

    code = "unauthorized"


class VaultLocked(SidecarError):
    """The vault must be unlocked first."""

    code = "vault_locked"


class KeyMissing(SidecarError):
    """No key for the provider (`data["provider"]`)."""

    code = "key_missing"


class TierRequired(SidecarError):
    """The current tier does not allow this; `data["required_tier"]` would."""

    code = "tier_required"


class QuotaExceeded(SidecarError):
    """A quota is used up: `data` has limit, used, remaining, period_start, period_end, metric."""

    code = "quota_exceeded"


class RateLimited(SidecarError):
    """Too many requests; retry after `data["retry_after_ms"]`."""

    code = "rate_limited"


class ProviderError(SidecarError):
    """The provider failed after retries/fallbacks: `data` has provider, status, attempts."""

    code = "provider_error"


class Cancelled(SidecarError):
    """The request was cancelled; for chat, `data` holds the usage billed so far."""

    code = "cancelled"


class ShuttingDown(SidecarError):
    """The daemon is stopping."""

    code = "shutting_down"


class ConfigInvalid(SidecarError):
    """`daemon.reload` found errors in config.toml (`data.errors`); the old config stays."""

    code = "config_invalid"


class Internal(SidecarError):
    """A bug or unexpected failure in the daemon (it is in the daemon's log)."""

    code = "internal"


class SidecarConnectionError(SidecarError, ConnectionError):
    """The connection to the daemon failed or was lost (a client-side error)."""

    code = "connection_error"


class DaemonNotRunning(SidecarConnectionError):
    """Nothing listens on the socket: start the daemon with `llm-sidecar serve`."""

    code = "daemon_not_running"


class DaemonStartFailed(SidecarConnectionError):
    """Autostart could not start the daemon: no binary found, or it exited or did not listen
    in time; `data` has `binary`, `log` (its log file) and `socket` where known."""

    code = "daemon_start_failed"


class ConnectionClosed(SidecarConnectionError):
    """The connection closed while a call was waiting for its answer, or before it was sent."""

    code = "connection_closed"


class ProtocolError(SidecarConnectionError):
    """The daemon sent something that is not MessagePack-RPC; the connection is closed."""

    code = "protocol_error"


class CallTimeout(SidecarError, TimeoutError):
    """A time limit of the call expired (client side); the call was cancelled on the daemon.

    `data`: `method`, `msgid`, `limit` (`"total"`, `"first_chunk"` or `"chunk"`, see
    `Timeout`) and `seconds`. Also a built-in `TimeoutError`."""

    code = "timeout"


ERRORS_BY_CODE: Dict[str, Type[SidecarError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        Unauthorized,
        VaultLocked,
        KeyMissing,
        TierRequired,
        QuotaExceeded,
        RateLimited,
        ProviderError,
        Cancelled,
        ShuttingDown,
        ConfigInvalid,
        Internal,
    )
}


def error_from_wire(error: Any) -> SidecarError:
    """The exception for a response's error element (`{code, message, data}`, tolerating junk)."""
    if isinstance(error, Mapping):
        code = str(error.get("code", "error"))
        message = str(error.get("message", ""))
        data = error.get("data")
        data = data if isinstance(data, Mapping) else {}
    else:
        code, message, data = "error", repr(error), {}
    cls = ERRORS_BY_CODE.get(code, SidecarError)
    return cls(message, data, code=code)
