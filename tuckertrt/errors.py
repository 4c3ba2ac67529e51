"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class TuckerTRTError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code = 1


class UsageError(TuckerTRTError):
    """Bad arguments (exit code 2, like click's own usage errors)."""

    exit_code = 2


class MissingDependencyError(TuckerTRTError):
    """An optional package (tensorrt, openvino, ...) is not installed."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = ""):
        hint = f"pip install 'tuckertrt[{extra}]'" if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{what}; install it with: {hint}")


class Terminated(BaseException):
    """SIGTERM arrived: raised like KeyboardInterrupt, so the same clean-up runs; the CLI exits 143."""
