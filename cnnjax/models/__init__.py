"""Flax Linen models, all reachable by name through the registry."""

from cnnjax.models.registry import (create_model, list_models,  # noqa: F401
                                    model_description, model_input_dtype,
                                    model_input_shape,
                                    register_model)
