"""Building blocks: convolutions, pooling, activations, normalisation, heads,
and the parts models share (residual blocks and shortcuts, squeeze-and-
excitation, conv-norm-act units).

All layers take channels-last inputs with 1, 2 or 3 spatial dims:
(B, W, C), (B, H, W, C) or (B, D, H, W, C).
"""

from cnnjax.layers.activations import (ACTIVATIONS, Maxout, PReLU,  # noqa: F401
                                       elu, gelu, get_activation, identity,
                                       leaky_relu, relu, sigmoid, silu, swish,
                                       tanh)
from cnnjax.layers.conv import (Conv, ConvUnit, conv1d, conv1x1,  # noqa: F401
                                conv2d, conv3d)
from cnnjax.layers.heads import (ClassifierHead, classify,  # noqa: F401
                                 softmax_probabilities)
from cnnjax.layers.local import LocallyConnected  # noqa: F401
from cnnjax.layers.normalization import (BatchNorm,  # noqa: F401
                                         LocalResponseNorm,
                                         TorchLikeBatchNorm, batch_norm,
                                         local_response_norm)
from cnnjax.layers.pooling import (AdaptiveAvgPool,  # noqa: F401
                                   AdaptiveMaxPool, AvgPool, ChannelMaxPool,
                                   GlobalAvgPool, GlobalMaxPool, LPPool,
                                   MaxPool, adaptive_avg_pool,
                                   adaptive_max_pool, avg_pool,
                                   ceil_mode_padding, channel_max_pool,
                                   global_avg_pool, global_max_pool, lp_pool,
                                   max_pool)
from cnnjax.layers.residual import (BLOCKS, BasicBlock,  # noqa: F401
                                    BottleneckBlock, PreActBasicBlock,
                                    PreActBlock, PreActBottleneckBlock,
                                    ResidualBlock, ZeroPadShortcut,
                                    shortcut_option)
from cnnjax.layers.octconv import OctConv, OctConvUnit  # noqa: F401
from cnnjax.layers.squeeze_excite import SqueezeExcite  # noqa: F401
from cnnjax.layers.transpose import (ConvTranspose,  # noqa: F401
                                     conv_transpose,
                                     conv_transpose_output_size)
