"""Data: decoding, datasets per task, augmentation presets, samplers and synthetic sets for tests."""
