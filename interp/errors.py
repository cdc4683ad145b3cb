"""Every error and warning of ``interp`` and ``reft``, in one place, with one base class each.

Example:
    >>> from interp.errors import InterpError, SiteError, InterpWarning, PaddingWarning
    >>> issubclass(SiteError, InterpError) and issubclass(InterpError, ValueError)
    True
    >>> issubclass(PaddingWarning, InterpWarning) and issubclass(InterpWarning, UserWarning)
    True

Catch :class:`InterpError` to catch anything this toolkit refuses (bad input, a file it cannot read, a run
that went non-finite); every class is also a ``ValueError``, so code that caught ``ValueError`` keeps working.
Messages say what was given, what was expected and what to try.
"""

from __future__ import annotations


class InterpError(ValueError):
    """Base of every error this toolkit raises on purpose."""


class InterpWarning(UserWarning):
    """Base of every warning this toolkit emits."""


# ---------------------------------------------------------------------------------------------- addressing


class SiteError(InterpError):
    """A site that does not exist in the model."""


class PositionError(InterpError):
    """A position that does not exist in some prompt of the batch."""


class InputError(InterpError):
    """Inputs that cannot be run as asked."""


class PaddingWarning(InterpWarning):
    """Token ids that look padded (they start or end with the tokenizer's pad id) but came without a mask."""


class LoadError(InterpError, FileNotFoundError):
    """A model that cannot be loaded as asked: a missing folder, a Hub id offline or not in the cache, a model
    that is not a causal LM, a bad dtype or device. The message names the input and what to try (a
    FileNotFoundError and a ValueError, so callers that catch either keep working)."""


# ---------------------------------------------------------------------------------------------- editing


class BasisError(InterpError):
    """A basis that does not fit the vectors it is asked to edit."""


class EditNotAppliedError(InterpError, RuntimeError):
    """An edit or read that fired a different number of times than its plan says (zero times: the forward
    never reached its module, or a stand-in layer skipped it; more: a generation step applied it twice)."""


# ---------------------------------------------------------------------------------------------- methods


class CausalModelError(InterpError):
    """A causal model, input or variable that does not fit."""


class DASError(InterpError):
    """A DAS run that cannot start as asked (bad data, rank, site or saved file)."""


class ReftError(InterpError):
    """A ReFT set-up, dataset or file that cannot be used as asked."""


class ServeError(ReftError):
    """An edit that cannot be served in vLLM as asked: an architecture, site, position or engine option that
    :mod:`reft.serve` does not support (the message names it and what is supported), or an unknown edit name."""


class PositionParseError(PositionError, ReftError):
    """Text that does not read as a position (``interp.position_text.parse_positions``: ``f1+l1+g``, ``all``,
    ``first(1)+last()``); a PositionError and a ReftError, as both packages' command lines read positions."""


class ConfigError(InterpError):
    """A training or run option outside its range (checked before any model is loaded)."""


class DASConfigError(ConfigError, DASError):
    """A ``DASConfig`` value outside its range (a ConfigError and a DASError)."""


class TrainConfigError(ConfigError, ReftError):
    """A ``reft.TrainConfig`` value outside its range (a ConfigError and a ReftError)."""


class NonFiniteError(InterpError, FloatingPointError):
    """Training met a non-finite loss or gradient; it stopped at that step and wrote nothing non-finite."""


class UnknownTaskError(InterpError):
    """A task name (or kind) that the registry does not hold."""


class FeaturizerError(InterpError):
    """A featurizer (difference of means, probe, PCA, k-means, LDA, random, SAE, mask) given data it cannot use."""


class BenchmarkDataError(InterpError, FileNotFoundError):
    """A benchmark's public data file is missing or malformed; the message says where to get it."""


class BenchmarkOptionError(ConfigError):
    """A benchmark runner's option (methods, layers, sizes) is not one it takes; refused before any work."""


# ---------------------------------------------------------------------------------------------- files


class FormatError(InterpError):
    """A saved result that cannot be written or read back as asked (an edited or damaged file, another model,
    or something a file could not restore)."""


class SaveExistsError(InterpError, FileExistsError):
    """A save with ``overwrite=False`` found (or lost a race to) a result already at its path."""


class WeightsChangedWarning(InterpWarning):
    """A saved result is loaded into a model of the same shapes whose weights differ from the one it was saved
    from (another checkpoint, or an edited model): it loads, but its numbers may no longer mean the same."""
