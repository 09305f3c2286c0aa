"""User-facing errors: one line that says what is wrong and where."""


class MalaError(Exception):
    """An error caused by the user's input (data, config, checkpoint); the CLI prints it without a traceback."""


class DataError(MalaError):
    """A dataset folder, image or mask that cannot be used."""


class CheckpointError(MalaError):
    """A checkpoint file that is missing, corrupt or does not match the model."""


class ConfigError(MalaError):
    """A configuration file or value that is invalid."""
