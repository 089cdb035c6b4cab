"""Dataset implementations behind the LEMUR loaders: file formats, labels, splits, caching, download."""


class DataError(Exception):
    """The data cannot serve a trial (missing, empty, unusable): retrying another trial won't help."""
