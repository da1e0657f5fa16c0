"""Reading /metrics as Prometheus does: prometheus_client's own parser over the real endpoint's text."""

from __future__ import annotations

from dataclasses import dataclass

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with this name and exactly these labels; None if there is none."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, f"{len(found)} samples of {name}{labels}"
        return found[0] if found else None

    def series(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample with this name."""
        return [s.labels for s in self.samples if s.name == name]


def scrape(client: FlaskClient) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain"), response.content_type
    text = response.get_data(as_text=True)
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    return Scrape(text, samples)
