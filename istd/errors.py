"""Errors that `istd` raises on bad input; the CLI turns each into one red line and exit code 1."""


class IstdError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""


class DataError(IstdError):
    """An unreadable, malformed or inconsistent image, mask, video or dataset file."""


class WeightsError(IstdError):
    """Missing, corrupt or incompatible model weights or configuration."""


class BackendError(IstdError):
    """A requested compute backend (scan kernel, device) is not available here."""


class ConfigError(IstdError):
    """An invalid training or model configuration value."""
