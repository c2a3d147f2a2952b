"""Data preparation: manifests and downloads, image decoding, splitting and packing."""
