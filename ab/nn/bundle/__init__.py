"""The mobile bundle: ``python -m ab.nn.bundle --model <ref> --to <folder>``."""
