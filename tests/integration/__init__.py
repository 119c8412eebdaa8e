"""Integration tests against the real sekmet-fhir server (``@pytest.mark.fhir_server``)."""
