"""Typed errors. Each says what failed, where, and what to do about it."""

from __future__ import annotations

from collections.abc import Sequence


class TorchslimError(Exception):
    """Base class of every error torchslim raises on purpose."""


class ConfigError(TorchslimError, ValueError):
    """A config field is unknown, has the wrong type or an invalid value."""


class ConfigProblems(ConfigError):
    """Several config problems at once; ``problems`` holds one line each, key path first."""

    def __init__(self, problems: Sequence[str], source: str) -> None:
        self.problems = tuple(problems)
        lines = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problems in {source}:{lines}")


class DataNotFoundError(TorchslimError, FileNotFoundError):
    """A dataset is not where torchslim looked for it."""


class ModelNotFoundError(TorchslimError, KeyError):
    """A model name is neither in torchslim's registry nor in torchvision."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TrainingDivergedError(TorchslimError, RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad step was applied."""


class CheckpointError(TorchslimError, RuntimeError):
    """A checkpoint is missing, unreadable or does not match the run."""


class UnsupportedOpError(TorchslimError, RuntimeError):
    """The dependency tracer met an op whose channel behaviour it does not know."""


class PruningError(TorchslimError, RuntimeError):
    """Pruning could not produce a working model; the original model was restored."""


class InputError(TorchslimError, ValueError, RuntimeError):
    """The model does not run on the inputs given (their shape, dtype or number), or a module
    rejected them. Also a ``RuntimeError``, what PyTorch itself raises for such inputs."""


class RunFolderError(TorchslimError, RuntimeError):
    """An output folder is in use by another run, or already holds a run that would be lost."""


class NonFiniteError(TorchslimError, ValueError):
    """Data, a weight or an activation is NaN or infinite where a finite value is needed."""
