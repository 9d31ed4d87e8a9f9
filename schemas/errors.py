"""The one exception tree of pupilflow. A violation is a value, never an exception: these mean bad input,
bad configuration, or an outage."""


class PupilflowError(Exception):
    """Base of every error pupilflow raises on purpose."""


class ConfigurationError(PupilflowError):
    """Settings or policy data are invalid; the message names the file or variable and the field."""


class PrerequisiteMissing(PupilflowError):  # noqa: N818 (a name others already import)
    """Something the local stack needs is not on this machine (Java, Maven, a free port, ...)."""


class ServiceUnavailable(PupilflowError):  # noqa: N818 (a name others already import)
    """Kafka or ClickHouse did not answer in time."""


class TransactionStalled(ServiceUnavailable):
    """A Kafka transaction of the stream worker did not commit in time (the worker restarts from its changelog)."""


class RebalanceStalled(ServiceUnavailable):
    """The sink's consumer group did not finish a rebalance in time (the sink rejoins with a fresh consumer)."""
