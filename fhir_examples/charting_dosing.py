"""Realistic-charting corpus: dosing and premedication.

Each example imitates how an EHR flowsheet, order set or problem list really records things; its comment says which
real charting it imitates. ``build.all_examples()`` adds these examples to the generated ``fhir_examples/``, so each
call runs through the HTTP API with full prefetch and through the FHIR fallback (``tests/test_examples.py``).
"""

from __future__ import annotations

from fhir_examples.build import Example

EXAMPLES: tuple[Example, ...] = ()
