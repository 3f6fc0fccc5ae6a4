"""The words of a study's record: its phases, a trial's status and why it stopped, and MLflow's tag keys.

Each is a ``str`` enum, so a member is its word wherever a string goes (JSON, Parquet, MLflow tags, pandas
comparisons) and every module that needs a word imports it from here rather than spelling it.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """The phases of a study: the search (grid × sampled values × seeds, ASHA may stop trials) and the
    confirm phase (the chosen settings re-run on more seeds, no early stopping)."""

    SEARCH = "search"
    CONFIRM = "confirm"


PHASES = tuple(Phase)


class TrialStatus(StrEnum):
    """A trial's status in ``trial.json``: Ray Tune's words, and ``ABANDONED`` (a record that no longer counts:
    a killed driver started the trial before Tune saved it, and Tune ran that work again as another trial)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    ABANDONED = "ABANDONED"


class StopReason(StrEnum):
    """Why a trial stopped (``trial.json``'s ``stop_reason``, the dataset's column, MLflow's tag).

    ``completed``: every planned report ran. ``early_stopped``: ASHA stopped it at a rung. ``stopped``: it
    ended early otherwise (the study's time budget). A trial that has not ended is ``running``, ``pending``
    or ``paused``; one that failed after its retries ``failed``; a record that no longer counts
    ``abandoned``.
    """

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    STOPPED = "stopped"
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"
    PAUSED = "paused"
    ABANDONED = "abandoned"

    @property
    def rank(self) -> int:
        """The reason's place in the order above (how summaries list reasons: completed first)."""
        return list(StopReason).index(self)

    @property
    def text(self) -> str:
        """The reason as people read it in ``ocr-study status``, the run summary and the report."""
        return _TEXT.get(self, self.value)


_TEXT = {StopReason.EARLY_STOPPED: "stopped early", StopReason.STOPPED: "stopped by the time budget"}
# The stop reason of a trial that has not ended (or failed), by its status.
UNFINISHED = {TrialStatus.ERROR: StopReason.FAILED, TrialStatus.RUNNING: StopReason.RUNNING,
              TrialStatus.PENDING: StopReason.PENDING, TrialStatus.PAUSED: StopReason.PAUSED,
              TrialStatus.ABANDONED: StopReason.ABANDONED}

TAG_PREFIX = "ocr_study."


class Decision(StrEnum):
    """What a sequential confirm phase decided about a chosen setting against the baseline."""

    BETTER = "better"  # the interval of Δ excludes 0 on the better side
    WORSE = "worse"  # ... on the worse side
    EQUIVALENT = "equivalent"  # the interval lies within ±margin
    UNDECIDED = "undecided"  # the maximum number of seeds is spent and none of the above holds
    OPEN = "open"  # more seeds are to come

    @property
    def text(self) -> str:
        """The decision as the table and ``ocr-study status`` print it."""
        return _DECISION_TEXT[self]


_DECISION_TEXT = {Decision.BETTER: "better", Decision.WORSE: "worse", Decision.EQUIVALENT: "equivalent",
                  Decision.UNDECIDED: "undecided at the maximum", Decision.OPEN: "open (more seeds to come)"}


class Tag(StrEnum):
    """The MLflow tags a study sets (``study.tracking`` writes them, ``results`` reads them back)."""

    STUDY = "ocr_study.study"
    ROLE = "ocr_study.role"  # "study" on the parent run
    SPEC_HASH = "ocr_study.spec_hash"
    GIT_COMMIT = "ocr_study.git_commit"
    VERSION = "ocr_study.version"
    TRIAL_ID = "ocr_study.trial_id"
    CELL = "ocr_study.cell"
    SETTING = "ocr_study.setting"
    SEED = "ocr_study.seed"
    PHASE = "ocr_study.phase"
    ROUND = "ocr_study.round"  # a sequential confirm trial's round (1 = the first `min` seeds)
    CONTINUES = "ocr_study.continues"  # a confirm trial continuing a completed search trial: that trial's id
    CONFIG = "ocr_study.config"  # the flat trial config as JSON, unrounded (older studies: now an artifact)
    STOP_REASON = "ocr_study.stop_reason"  # a StopReason
    STOP_EPOCH = "ocr_study.stop_epoch"  # the report a trial that did not complete ended at
    COMPLETED = "ocr_study.completed"  # "true" / "false": the filter for averaging completed runs only
    ERROR = "ocr_study.error"
    ABANDONED = "ocr_study.abandoned"  # "true" on the run of a trial record that no longer counts
    OUTCOME = "ocr_study.outcome"  # how the trial ended, in words ("stopped by ASHA at epoch 2"): a column

    @property
    def key(self) -> str:
        """The tag's name without the prefix (``cell``): the ``meta.`` key it mirrors."""
        return self.value.removeprefix(TAG_PREFIX)
