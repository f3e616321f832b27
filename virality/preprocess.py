"""The one place images become network input for deploy nets (prediction, evaluation).

Training feeds apply the same recipe inside Caffe (transform_param) or the
pair-index layer: resize to the architecture's ``image_size`` (the stored size),
centre crop ``crop_size``, subtract the BGR mean, multiply by ``input_scale``,
HWC -> CHW. Images are BGR uint8 as OpenCV reads them.
"""
import cv2
import numpy as np


def resize_square(image_bgr, size):
    """Resize to size x size (the image store's convention: plain resize, aspect not kept)."""
    if image_bgr.shape[0] == size and image_bgr.shape[1] == size:
        return image_bgr
    return cv2.resize(image_bgr, (size, size), interpolation=cv2.INTER_AREA)


def to_input(images_bgr, arch):
    """uint8 images (N, H, W, 3) of any size -> float32 (N, 3, crop, crop) network input."""
    batch = np.empty((len(images_bgr), 3, arch.crop_size, arch.crop_size), dtype=np.float32)
    offset = (arch.image_size - arch.crop_size) // 2
    mean = np.asarray(arch.mean_bgr, dtype=np.float32)
    for i, image in enumerate(images_bgr):
        image = resize_square(np.asarray(image), arch.image_size)
        crop = image[offset:offset + arch.crop_size, offset:offset + arch.crop_size].astype(np.float32)
        batch[i] = ((crop - mean) * arch.input_scale).transpose(2, 0, 1)
    return batch
