"""Flax Linen models, all reachable by name through the registry.

    model = create_model('resnet20', num_classes=10)

One file per family; importing the package imports every family, whose
`@register_model` lines fill the registry (models/registry.py).
"""

from cnnjax.models.backbone import (Backbone, FeatureStage,  # noqa: F401
                                    backbone_variables, feature_backbone,
                                    has_backbone)
from cnnjax.models.registry import (MODELS, ModelSpec,  # noqa: F401
                                    create_model, list_models,
                                    model_description, model_input_dtype,
                                    model_input_shape, register_model)
# The families, so that their registrations run.
from cnnjax.models import (airbench, alexnet, allconv, conv1d, densenet,  # noqa: F401, E402
                           ecg, freq_cnn, googlenet, lenet, mlp, octresnet,
                           recurrent, resnet, rf_cnn, sharing, text_cnn,
                           toy, vgg)
# Heads on the families' backbones, registered after them.
from cnnjax.models import detection, segmentation  # noqa: F401, E402
