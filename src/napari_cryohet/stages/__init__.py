"""One module per analysis stage: config dataclass, run function with progress
callback and cancellation, result dataclass that saves to / loads from a workspace."""
