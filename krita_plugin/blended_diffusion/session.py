"""The plugin's one model for the Krita session, put together from its parts: the shared settings, the
engine shared with scripts (``api.default_engine``), Krita's documents, the worker threads and the
non-modal windows. The docker and the actions bind to it."""

from typing import Optional

from . import api
from .backend.threads import JobThreads
from .documents import KritaDocuments
from .model.plugin import PluginModel
from .settings import shared_store

_model: Optional[PluginModel] = None


def model() -> PluginModel:
    global _model
    if _model is None:
        from .ui import notices  # windows for messages while the docker is closed

        _model = PluginModel(shared_store(), api.default_engine(), KritaDocuments(), JobThreads(), notices)
    return _model
