"""Caffe layer for the paper's pairwise ranking loss (Eqs. 1-4); math in virality.model.ranking.

    layer {
      name: "loss" type: "Python"
      bottom: "score" bottom: "score_p" bottom: "label"
      top: "loss" top: "accuracy"          # the second top is optional
      python_param { module: "python_layers.ranking_loss" layer: "RankingLoss"
                     param_str: '{"lambda": 0.001, "epsilon": 0.1, "normalize": false}' }
      loss_weight: 1 loss_weight: 0        # Python layers have no default loss weight
    }
"""

import caffe
from virality.model.layer_params import LayerConfigError, parse_param_str
from virality.model.ranking import DEFAULT_EPSILON, DEFAULT_LAMBDA, LossConfig, ranking_loss

LAYER = "RankingLoss (python_layers.ranking_loss)"


class RankingLoss(caffe.Layer):
    """E_p = sum_batch (E_c + lambda * E_r) for scores f1, f2 of image pairs.

    Bottoms: f1 (N or N x 1), f2 (same), y (N or N x 1) with y = +1 when I1 is the
    more viral image and -1 when I2 is. Top 0: the loss, a scalar. Optional top 1:
    the batch's pairwise accuracy (f1 > f2 agrees with y; ties count half).

    param_str (JSON; every key optional, unknown keys are an error):
      lambda    (float, default 0.001): weight of E_r, the paper's lambda (Sec. 3).
      epsilon   (float, default 0.1):   E_r = 1 / ((f2 - f1)^2 + epsilon); bounds the
                                        singularity at f1 = f2 (docs/LOSS.md). > 0.
      normalize (bool, default false):  false sums over the batch (Eq. 1); true
                                        divides the loss and gradients by N.
      e.g. '{"lambda": 0.001, "epsilon": 0.1}'

    Gradients are scaled by top[0].diff (loss_weight) and written only to the
    bottoms whose propagate_down is set; the label's diff is never written.
    Data-parallel training (caffe.solver_count() = N > 1, tools/train.py --gpus): Caffe's NCCL
    averages the N solvers' gradients, which is right for a mean but not for Eq. 1's sum over
    the batch; with normalize false the TRAIN-phase gradients are multiplied by N, so N solvers
    of batch B follow exactly the gradient of one solver with batch N x B (docs/GPU.md).
    """

    SCHEMA = {
        "lambda": (DEFAULT_LAMBDA, float),
        "epsilon": (DEFAULT_EPSILON, float),
        "normalize": (False, bool),
    }

    def setup(self, bottom, top):
        params = parse_param_str(LAYER, self.param_str, self.SCHEMA)
        try:
            self.config = LossConfig(lam=params["lambda"], epsilon=params["epsilon"],
                                     normalize=params["normalize"])
        except ValueError as err:
            raise LayerConfigError(f"{LAYER}: {err}") from None
        self._shapes = None   # the bottom shapes reshape last checked
        self._solvers = caffe.solver_count() if self.phase == caffe.TRAIN and not params["normalize"] else 1
        if len(bottom) != 3:
            raise LayerConfigError(f"{LAYER}: needs 3 bottoms (f1, f2, y), got {len(bottom)}")
        if len(top) not in (1, 2):
            raise LayerConfigError(f"{LAYER}: needs 1 top (loss) or 2 (loss, accuracy), got {len(top)}")

    def reshape(self, bottom, top):
        # Caffe calls reshape before every forward: nothing to do when the shapes are the
        # ones already checked (this keeps the layer's share of a tiny net's step small).
        shapes = (tuple(bottom[0].shape), tuple(bottom[1].shape), tuple(bottom[2].shape))   # IntVec: by identity
        if shapes == self._shapes:
            return
        n = bottom[0].shape[0] if bottom[0].shape else 0
        for i, name in enumerate(("f1", "f2", "y")):
            shape = tuple(bottom[i].shape)
            if not shape or shape[0] != n or bottom[i].count != n:
                raise LayerConfigError(
                    f"{LAYER}: bottom {i} ({name}) must hold one value per pair, shape ({n},) or "
                    f"({n}, 1); got {shape} (f1 has {n} pairs)")
        top[0].reshape()
        if len(top) == 2:
            top[1].reshape()
        self._result = None
        self._shapes = shapes

    def forward(self, bottom, top):
        try:
            self._result = ranking_loss(bottom[0].data, bottom[1].data, bottom[2].data, self.config)
        except ValueError as err:
            raise LayerConfigError(f"{LAYER}: bottom 2 (y): {err}") from None
        top[0].data[...] = self._result.loss
        if len(top) == 2:
            top[1].data[...] = self._result.accuracy

    def backward(self, top, propagate_down, bottom):
        scale = float(top[0].diff.flat[0]) * self._solvers   # the loss weight; x N: NCCL averages the N solvers
        grads = (self._result.grad_f1, self._result.grad_f2)
        for i in (0, 1):
            if propagate_down[i]:
                bottom[i].diff.flat[:] = grads[i] if scale == 1.0 else scale * grads[i]
        # bottom[2] is the label: it has no gradient and its diff is left untouched.
