"""Tower architectures: AlexNet, VGG-19 (Caffe Model Zoo layouts) and a tiny CPU net.

A tower maps an image blob to its penultimate features (fc7 after ReLU, and
dropout when asked). Each architecture is one function, called once per tower
with a name prefix/suffix; parameters are named from the *base* layer name
(``conv1_w``, ``conv1_b``) so that every tower built with the same ``param_prefix``
shares its weights (Caffe's named params). Layer names of the first tower keep
the Model Zoo names (``conv1`` .. ``fc7``) so ``caffe train -weights`` and
``Net.copy_from`` fill the shared blobs from ImageNet weights (PAPER.md table).
"""
from dataclasses import dataclass, field

from caffe import layers as L, params as P

#: Mean pixels (BGR) of the Model Zoo models (PAPER.md "Inputs").
ALEXNET_MEAN_BGR = (104.007, 116.669, 122.679)
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Architecture:
    """What the nets, data tools and predictor need to know about a tower."""

    name: str
    image_size: int          # side of the stored (resized) image
    crop_size: int           # side of the network input
    mean_bgr: tuple          # per-channel mean subtracted from BGR pixels in [0, 255]
    input_scale: float       # multiplies (pixel - mean); 1 for Model Zoo nets (their convention)
    feature_dim: int         # size of the fc7 features
    pretrained: tuple        # the Model Zoo layers a pretrained tower takes ('' when none)
    build: object = field(repr=False, compare=False)


class TowerNamer:
    """Names of one tower's layers and params.

    layer(base) -> the layer/top name, e.g. "conv1" (tower A), "conv1_p" (tower B),
                   "topic_conv1" (topic branch).
    params(base, lr_mult) -> the param specs that share weights across towers.
    """

    def __init__(self, layer_prefix="", layer_suffix="", param_prefix="", lr_mult=1.0, decay_mult=1.0):
        self.layer_prefix = layer_prefix
        self.layer_suffix = layer_suffix
        self.param_prefix = param_prefix
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult

    def layer(self, base):
        return f"{self.layer_prefix}{base}{self.layer_suffix}"

    def params(self, base):
        # Caffe convention: biases learn twice as fast and are not decayed.
        name = f"{self.param_prefix}{base}"
        return [dict(name=f"{name}_w", lr_mult=1.0 * self.lr_mult, decay_mult=1.0 * self.decay_mult),
                dict(name=f"{name}_b", lr_mult=2.0 * self.lr_mult, decay_mult=0.0)]


def _conv(n, namer, bottom, base, num_output, kernel, stride=1, pad=0, group=1, weight_filler=None):
    top = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=stride, pad=pad,
                        group=group, param=namer.params(base),
                        weight_filler=weight_filler or dict(type="gaussian", std=0.01),
                        bias_filler=dict(type="constant", value=0))
    n[namer.layer(base)] = top
    return top


def _fc(n, namer, bottom, base, num_output, weight_filler=None):
    top = L.InnerProduct(bottom, num_output=num_output, param=namer.params(base),
                         weight_filler=weight_filler or dict(type="gaussian", std=0.005),
                         bias_filler=dict(type="constant", value=0))
    n[namer.layer(base)] = top
    return top


def _relu(n, namer, bottom, base):
    n[namer.layer(base)] = L.ReLU(bottom, in_place=True)
    return bottom


def _pool(n, namer, bottom, base, kernel, stride):
    top = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=kernel, stride=stride)
    n[namer.layer(base)] = top
    return top


def _lrn(n, namer, bottom, base):
    top = L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)
    n[namer.layer(base)] = top
    return top


def _drop(n, namer, bottom, base, dropout):
    if dropout:
        n[namer.layer(base)] = L.Dropout(bottom, dropout_ratio=0.5, in_place=True)
    return bottom


def alexnet_tower(n, data, namer, dropout=True):
    """bvlc_alexnet without fc8 (Krizhevsky et al. 2012 as in Caffe's Model Zoo)."""
    x = _conv(n, namer, data, "conv1", 96, 11, stride=4)
    x = _relu(n, namer, x, "relu1")
    x = _lrn(n, namer, x, "norm1")
    x = _pool(n, namer, x, "pool1", 3, 2)
    x = _conv(n, namer, x, "conv2", 256, 5, pad=2, group=2)
    x = _relu(n, namer, x, "relu2")
    x = _lrn(n, namer, x, "norm2")
    x = _pool(n, namer, x, "pool2", 3, 2)
    x = _conv(n, namer, x, "conv3", 384, 3, pad=1)
    x = _relu(n, namer, x, "relu3")
    x = _conv(n, namer, x, "conv4", 384, 3, pad=1, group=2)
    x = _relu(n, namer, x, "relu4")
    x = _conv(n, namer, x, "conv5", 256, 3, pad=1, group=2)
    x = _relu(n, namer, x, "relu5")
    x = _pool(n, namer, x, "pool5", 3, 2)
    return _fc67(n, namer, x, dropout)


def _fc67(n, namer, x, dropout):
    """fc6 and fc7 (4096 each) with ReLU and Dropout: the head AlexNet and VGG-19 share."""
    x = _fc(n, namer, x, "fc6", 4096)
    x = _relu(n, namer, x, "relu6")
    x = _drop(n, namer, x, "drop6", dropout)
    x = _fc(n, namer, x, "fc7", 4096)
    x = _relu(n, namer, x, "relu7")
    return _drop(n, namer, x, "drop7", dropout)


#: VGG-19 (Simonyan & Zisserman 2014, configuration E): (block, convs, channels).
_VGG19_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))


def vgg19_tower(n, data, namer, dropout=True):
    """VGG_ILSVRC_19_layers without fc8."""
    x = data
    xavier = dict(type="xavier")
    for block, convs, channels in _VGG19_BLOCKS:
        for i in range(1, convs + 1):
            x = _conv(n, namer, x, f"conv{block}_{i}", channels, 3, pad=1, weight_filler=xavier)
            x = _relu(n, namer, x, f"relu{block}_{i}")
        x = _pool(n, namer, x, f"pool{block}", 2, 2)
    return _fc67(n, namer, x, dropout)


def tiny_tower(n, data, namer, dropout=True):
    """A small CPU tower (32x32 input, ~60k parameters) with the same layer roles.

    Not from the paper: it exists so the whole pipeline trains in minutes on two
    CPU cores. No pretrained weights; Xavier initialisation.
    """
    xavier = dict(type="xavier")
    x = _conv(n, namer, data, "conv1", 16, 5, pad=2, weight_filler=xavier)
    x = _relu(n, namer, x, "relu1")
    x = _pool(n, namer, x, "pool1", 2, 2)
    x = _conv(n, namer, x, "conv2", 32, 3, pad=1, weight_filler=xavier)
    x = _relu(n, namer, x, "relu2")
    x = _pool(n, namer, x, "pool2", 2, 2)
    x = _conv(n, namer, x, "conv3", 32, 3, pad=1, weight_filler=xavier)
    x = _relu(n, namer, x, "relu3")
    x = _pool(n, namer, x, "pool3", 2, 2)
    x = _fc(n, namer, x, "fc6", 64, weight_filler=xavier)
    x = _relu(n, namer, x, "relu6")
    x = _fc(n, namer, x, "fc7", 64, weight_filler=xavier)
    return _relu(n, namer, x, "relu7")


_ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
_VGG19_LAYERS = tuple(f"conv{b}_{i}" for b, c, _ in _VGG19_BLOCKS for i in range(1, c + 1)) + ("fc6", "fc7")

ARCHITECTURES = {
    "alexnet": Architecture("alexnet", image_size=256, crop_size=227, mean_bgr=ALEXNET_MEAN_BGR,
                            input_scale=1.0, feature_dim=4096, pretrained=_ALEXNET_LAYERS, build=alexnet_tower),
    "vgg19": Architecture("vgg19", image_size=256, crop_size=224, mean_bgr=VGG_MEAN_BGR,
                          input_scale=1.0, feature_dim=4096, pretrained=_VGG19_LAYERS, build=vgg19_tower),
    "tiny": Architecture("tiny", image_size=36, crop_size=32, mean_bgr=(128.0, 128.0, 128.0),
                         input_scale=1.0 / 128, feature_dim=64, pretrained=(), build=tiny_tower),
}

#: Layers of every architecture that hold learnable parameters (conv/fc, no fc8).
TOWER_PARAM_LAYERS = {
    "alexnet": _ALEXNET_LAYERS,
    "vgg19": _VGG19_LAYERS,
    "tiny": ("conv1", "conv2", "conv3", "fc6", "fc7"),
}
