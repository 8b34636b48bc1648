"""One error tree for all of Ferry.

Every message says what was wrong, what was expected, what was received and how to fix it.
Transports map ``ErrorCode`` to their own status codes (one table each); this module imports
no transport.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    INTERNAL = "internal"


class FerryError(Exception):
    """Base of every error Ferry raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class SpecError(FerryError):
    """ferry.yaml (or another config) is wrong; raised at start-up with the key named."""

    code = ErrorCode.INVALID_ARGUMENT


class DataError(FerryError):
    """A data file or dataset cannot be used as asked."""

    code = ErrorCode.INVALID_ARGUMENT


class SignatureError(FerryError):
    """A batch does not match a model's signature."""

    code = ErrorCode.INVALID_ARGUMENT


class TrainingError(FerryError):
    """Search or training could not produce an acceptable model."""

    code = ErrorCode.FAILED_PRECONDITION


class BudgetError(TrainingError):
    """No candidate met the production budgets."""


class ExportError(FerryError):
    """Conversion to ONNX failed or the converted graph disagrees with the original."""

    code = ErrorCode.FAILED_PRECONDITION


class BundleError(FerryError):
    """A bundle is missing files, has a bad manifest or fails its hash check."""

    code = ErrorCode.FAILED_PRECONDITION


class RegistryError(FerryError):
    """A registry operation failed."""

    code = ErrorCode.FAILED_PRECONDITION


class NotFoundError(RegistryError):
    code = ErrorCode.NOT_FOUND


class RefError(FerryError):
    """A model reference like ``fraud@production`` or ``fraud:3`` is malformed."""

    code = ErrorCode.INVALID_ARGUMENT
