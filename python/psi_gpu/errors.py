"""The exceptions psi_gpu raises; each carries the CLI's one-line message.

``Error`` is the base of all of them. Bad arguments are also ``ValueError`` and file problems
also ``OSError``, so code that catches the built-in classes keeps working:

- ``InvalidInputError(Error, ValueError)``: a wrong shape, dtype or channel count, a bad option.
- ``AdapterError(Error, ValueError)``: an unknown backend, or no adapter with that index, PCI
  bus id or name.
- ``FileFormatError(Error, OSError)``: a damaged or unsupported npy or safetensors file. (The
  TIFF reader reports a damaged or unsupported stack as ``InvalidInputError``: the core's
  ``Error::Invalid``.)
- ``FileError(Error, OSError)``: a file that cannot be read or written, or an output that is
  also an input.
- ``GpuError(Error, RuntimeError)``: no adapter at all, the device failing, a shader error.
- ``StoppedError(Error)``: a stop was requested (Ctrl-C in the CLI).
- ``InternalError(Error, RuntimeError)``: a bug in psi-gpu (a panic caught before it could
  abort the interpreter).
"""


class Error(Exception):
    """Base class of every psi_gpu error."""


class InvalidInputError(Error, ValueError):
    """A wrong shape, dtype or channel count, or an option the run cannot use."""


class AdapterError(Error, ValueError):
    """An unknown backend, or no adapter matches the index, PCI bus id or name given."""


class FileFormatError(Error, OSError):
    """A file that is damaged or in a form psi-gpu does not read."""


class FileError(Error, OSError):
    """A file that cannot be read or written, or an output that is also an input."""


class GpuError(Error, RuntimeError):
    """No GPU adapter, or the device or a shader failed."""


class StoppedError(Error):
    """The run was asked to stop."""


class InternalError(Error, RuntimeError):
    """A bug in psi-gpu: an internal panic, caught and raised instead of aborting."""


__all__ = [
    "Error",
    "InvalidInputError",
    "AdapterError",
    "FileFormatError",
    "FileError",
    "GpuError",
    "StoppedError",
    "InternalError",
]
