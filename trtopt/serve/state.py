"""What both front ends share: the model repository, the metrics, and whether the server is draining."""

from __future__ import annotations

from dataclasses import dataclass

from trtopt import __version__
from trtopt.serve.errors import Unavailable
from trtopt.serve.models import ModelRepository, ServedModel
from trtopt.serve.metrics import ServeMetrics
from trtopt.serve.settings import ServerSettings

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]


@dataclass
class ServerState:
    repository: ModelRepository
    metrics: ServeMetrics
    settings: ServerSettings
    draining: bool = False

    @property
    def live(self) -> bool:
        return self.repository.load_error is None

    @property
    def ready(self) -> bool:
        """Ready once every model loaded and ran its warm-up, until shutdown begins."""
        return self.repository.ready and not self.draining

    def model_ready(self, name: str, version: str = "") -> bool:
        """A model's readiness: loaded and warmed up, until shutdown begins (NotFound for unknown models)."""
        return self.repository.get(name, version).ready and not self.draining

    def model_to_infer(self, name: str, version: str = "") -> ServedModel:
        """The model an infer request names; Unavailable once shutdown began, so neither front end takes new work."""
        if self.draining:
            raise Unavailable("the server is shutting down")
        return self.repository.get(name, version)

    def server_metadata(self) -> dict[str, object]:
        return {"name": "trtopt", "version": __version__, "extensions": EXTENSIONS}

    def statistics(self, name: str = "", version: str = "") -> dict[str, object]:
        models = [self.repository.get(name, version)] if name else list(self.repository.models.values())
        return {"model_stats": [model.stats.to_json() for model in models]}
