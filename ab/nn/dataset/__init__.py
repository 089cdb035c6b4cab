"""Dataset implementations behind the LEMUR loaders: file formats, labels, splits, caching, download;
and a trial's data loaded through those loaders (``trial_data``)."""


class DataError(Exception):
    """The data cannot serve a trial (missing, empty, unusable): retrying another trial won't help."""
