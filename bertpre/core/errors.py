"""The one exception type a user can fix, and its config flavour; the CLI prints them as one line."""


class BertpreError(Exception):
    """A problem the user can fix; the CLI prints it as one line, without a traceback."""


class ConfigError(BertpreError):
    """A config file or override that is not a valid instance of its dataclass."""
