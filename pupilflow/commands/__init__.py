"""One module per `pupilflow` sub-command; each exposes `register(subparsers)`."""
