"""``/preview``: card files and order hooks as an EHR would show them, for analysts and testers (not for care)."""

from service.preview.routes import mount

__all__ = ["mount"]
