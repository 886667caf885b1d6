"""The version of cinn, written into every checkpoint it saves."""

__version__ = "0.3.0"
