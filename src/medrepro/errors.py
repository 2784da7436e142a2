"""Errors that carry one clear, user-facing message naming the file, key or URL at fault."""


class MedreproError(Exception):
    """Base class: the message is meant for the user as is."""


class ParamsError(MedreproError):
    """params.yaml (or an override) has an unknown key, a wrong type or a missing value."""


class DataError(MedreproError):
    """A dataset file is missing, corrupt, truncated, mislabeled or fails its checksum."""


class ManualDownloadError(DataError):
    """A dataset must be placed by hand; the message says where to get it and where to put it."""


class WeightsError(MedreproError):
    """Pretrained weights could not be found or loaded."""
