"""blina-cds: a CDS Hooks 2.0 service for blinatumomab safety."""

__version__ = "0.1.0"
