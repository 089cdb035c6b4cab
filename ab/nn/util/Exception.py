"""LEMUR's exception classes (``ab.nn.util.Exception`` in nn-dataset), with LEMUR's constructors and
attributes, so that code written for LEMUR (NN-GPT's scripts, generated model files) catches what
``check_nn`` raises here: ``AccuracyException`` with ``.accuracy``, ``.duration`` (ns) and
``.message``, ``LearnTimeException`` with ``.estimated_training_time``, ``.epoch_limit_minutes`` and
``.duration``, and Python's ``SyntaxError`` for code that does not parse (``CodeSyntaxError``).

This project adds ``CheckNNError``, the base of every ``check_nn`` failure, which carries
``trial_id``: the failed trial recorded for the code (None where none was recorded). LEMUR's classes
derive from it here, so one ``except CheckNNError`` still catches them all; a LEMUR caller's
``except Exception`` does too. The classes live at the bottom floor (``ab.nn.util``) so that the
trial code and ``check_nn`` above can both raise them.
"""
from __future__ import annotations

import math

__all__ = ["AccuracyException", "CheckNNError", "CodeSyntaxError", "CudaOutOfMemory", "LearnTimeException"]


class CheckNNError(RuntimeError):
    """Generated code could not be trained; ``trial_id`` is the failed trial recorded for it (if any)."""

    def __init__(self, message: str, trial_id: int | None = None):
        super().__init__(message)
        self.message = message
        self.trial_id = trial_id

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # rebuilt whole on the other side of a pipe or pool (args holds only the message)
        return type(self), (self.message, self.trial_id)


class AccuracyException(CheckNNError):
    """LEMUR's accuracy gate stopped training: accuracy not above 1.2 x the dataset's minimum.
    ``accuracy`` is the epoch's accuracy, ``duration`` the trial's time until then in ns."""

    def __init__(self, accuracy: float, duration: int | None, message: str, trial_id: int | None = None):
        super().__init__(message, trial_id)
        self.accuracy = accuracy
        self.duration = duration

    def __reduce__(self):
        return type(self), (self.accuracy, self.duration, self.message, self.trial_id)


class LearnTimeException(CheckNNError):
    """Training was stopped by a time limit. LEMUR's ``estimated_training_time`` is the estimate that
    broke the limit (None when the trial was stopped without one), ``epoch_limit_minutes`` the limit,
    ``duration`` the time trained in ns."""

    def __init__(self, estimated_training_time: float | None, epoch_limit_minutes: float, duration: int | None,
                 message: str | None = None, trial_id: int | None = None):
        super().__init__(message or f"training stopped by the time limit of {epoch_limit_minutes:g} minutes per epoch",
                         trial_id)
        self.estimated_training_time = estimated_training_time
        self.epoch_limit_minutes = epoch_limit_minutes
        self.duration = duration

    def __reduce__(self):
        return type(self), (self.estimated_training_time, self.epoch_limit_minutes, self.duration, self.message,
                            self.trial_id)


class CodeSyntaxError(CheckNNError, SyntaxError):
    """The code does not parse: a ``SyntaxError`` (as LEMUR raises when it imports the code) with the
    parser's ``msg``, ``lineno``, ``offset`` and ``text``, and ``trial_id``."""

    def __init__(self, message: str, trial_id: int | None, error: SyntaxError):
        super().__init__(message, trial_id)
        self.msg, self.lineno, self.offset, self.text = error.msg, error.lineno, error.offset, error.text
        self.filename = error.filename

    def __reduce__(self):
        error = SyntaxError(self.msg, (self.filename, self.lineno, self.offset, self.text))
        return type(self), (self.message, self.trial_id, error)


class CudaOutOfMemory(Exception):
    """LEMUR's signal to retry with a smaller batch (``batch_size_power()``: log2 of the batch that did
    not fit). Kept for code that imports it; this project's sweep does not raise it."""

    def __init__(self, batch: int):
        super().__init__(f"CUDA out of memory at batch {batch}")
        self.batch = batch
        self.batch_power = int(math.log2(batch))

    def __reduce__(self):
        return type(self), (self.batch,)

    def batch_size_power(self) -> int:
        return self.batch_power
