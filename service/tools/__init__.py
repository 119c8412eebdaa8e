"""Analyst and tester tools beside the pipeline, never inside it: ``cards check``, ``preview``, ``feedback report``."""
