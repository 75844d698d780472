"""Errors a user can act on: each message is one line naming what and where."""


class StudioError(Exception):
    """A problem with a setting or an input, reported as one clear line."""


class InvalidDropName(StudioError):
    pass


class BriefsError(StudioError):
    pass


class EncoderError(StudioError):
    pass


class StoreError(StudioError):
    pass


class GeneratorError(StudioError):
    pass
