"""The one exception type the input pipeline raises for bad user input."""


class DataError(ValueError):
    """A dataset could not be built from what the user asked for.

    Raised for unknown dataset names, empty or one-class folders, batch sizes
    larger than the data and similar mistakes. The message is meant to be shown
    to the user as is, so it always says what was wrong and what is valid.
    """
