"""Pretrained weights: Model Zoo manifests, verified downloads, .caffemodel files, loading and proving them."""
