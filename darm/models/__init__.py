"""Model families. Importing this package registers every family."""

from darm.models import gated_pixelcnn, gpt, markov, pixelcnn, rnn, wavenet  # noqa: F401  (registration)
from darm.models.base import ARModel
from darm.models.registry import (
    config_fields,
    create_model,
    get_entry,
    list_models,
    reads_images,
    seal_built_ins,
)

seal_built_ins()

__all__ = ["ARModel", "create_model", "list_models", "get_entry", "config_fields", "reads_images"]
