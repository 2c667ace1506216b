"""Exception classes shared by the ELMRec packages."""


class ElmrecError(Exception):
    """Base class of every error raised on purpose by this project."""


class DataError(ElmrecError, ValueError):
    """Malformed input data or request data."""


class BundleError(ElmrecError):
    """Corrupt or incompatible model bundle."""
