"""The one place images become deploy-net input (prediction, evaluation, features).

Training feeds apply the same recipe inside Caffe (transform_param) or in the
pair-index layer: the image store holds images resized to ``image_size``
(virality.data.imagestore.resize_square); the net sees the centre ``crop_size`` crop
(random crop + mirror in training), BGR, (pixel - mean_bgr) * scale, CHW.
"""
from dataclasses import dataclass

import numpy as np

from virality.data.imagestore import resize_square


@dataclass(frozen=True)
class InputSpec:
    image_size: int
    crop_size: int
    mean_bgr: tuple
    scale: float = 1.0

    @classmethod
    def of_architecture(cls, arch):
        return cls(arch.image_size, arch.crop_size, tuple(arch.mean_bgr), arch.input_scale)

    @classmethod
    def of_release(cls, metadata):
        inp = metadata["input"]
        return cls(int(inp["image_size"]), int(inp["crop_size"]), tuple(inp["mean_bgr"]),
                   float(inp.get("scale", 1.0)))


def to_input(images_bgr, spec):
    """uint8 BGR images (each H x W x 3, any size) -> float32 (N, 3, crop, crop)."""
    batch = np.empty((len(images_bgr), 3, spec.crop_size, spec.crop_size), dtype=np.float32)
    offset = (spec.image_size - spec.crop_size) // 2
    mean = np.asarray(spec.mean_bgr, dtype=np.float32)
    for i, image in enumerate(images_bgr):
        image = resize_square(np.asarray(image), spec.image_size)
        crop = image[offset:offset + spec.crop_size, offset:offset + spec.crop_size].astype(np.float32)
        batch[i] = ((crop - mean) * spec.scale).transpose(2, 0, 1)
    return batch


def chw_to_input(chw_uint8, spec):
    """Images from the image store, uint8 (N, 3, image_size, image_size) -> network input."""
    offset = (spec.image_size - spec.crop_size) // 2
    crop = chw_uint8[:, :, offset:offset + spec.crop_size, offset:offset + spec.crop_size].astype(np.float32)
    mean = np.asarray(spec.mean_bgr, dtype=np.float32).reshape(1, 3, 1, 1)
    return (crop - mean) * spec.scale


def forward_blobs(net, inputs, blobs, batch_size=64):
    """Run a deploy net over float32 inputs (N, 3, c, c); return each named blob as (N, -1) float64."""
    outs = {b: [] for b in blobs}
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        net.blobs["data"].reshape(*chunk.shape)
        net.blobs["data"].data[...] = chunk
        net.forward()
        for b in blobs:
            outs[b].append(np.array(net.blobs[b].data, dtype=np.float64).reshape(len(chunk), -1))
    return [np.concatenate(outs[b]) if outs[b] else np.empty((0, 1)) for b in blobs]


def forward_in_batches(net, inputs, output_blob, batch_size=64):
    """One output blob of a deploy net over float32 inputs, as (N, -1) float64."""
    return forward_blobs(net, inputs, [output_blob], batch_size)[0]
