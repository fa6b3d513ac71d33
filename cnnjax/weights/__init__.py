"""Weights in and out: PyTorch (torchvision, timm) state dicts to cnnjax
variables and back, by declarative per-family tables (twins.py), with exact
conversions (convert.py) and safe file reading (files.py).

    from cnnjax.weights import create_model
    model, variables = create_model("resnet18", pretrained="resnet18-f37072fd.pth")
"""

from cnnjax.weights.api import (Pretrained, create_model,  # noqa: F401
                                export_state_dict, import_state_dict,
                                load_pretrained)
from cnnjax.weights.convert import (ImportReport, WeightsMismatchError,  # noqa: F401
                                    state_dict_to_variables,
                                    variables_to_state_dict)
from cnnjax.weights.files import read_state_dict, write_state_dict  # noqa: F401
from cnnjax.weights.twins import TWINS, Rule, Twin, twin_of, twin_table  # noqa: F401
