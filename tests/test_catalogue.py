"""``vtc list`` reads a stored catalogue (no torch); this keeps it equal to the registry and adapters."""
from vtc import catalogue


def test_catalogue_matches_the_registry_and_adapters() -> None:
    assert catalogue.load() == catalogue.generate(), "run `python -m vtc.catalogue` to regenerate vtc/catalogue.json"
