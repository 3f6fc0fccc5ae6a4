"""From finished (or running) studies to Parquet datasets, paper-shaped tables and plots.

Reads what studies wrote (Tune's storage, MLflow) with pyarrow and pandas; imports neither Ray nor the
training code.
"""

from results._collect_tune import collect_study
from results._errors import ResultsError
from results._schema import SCHEMA_VERSION, Dataset, load_dataset
from results._study_info import StudyInfo
from results._synthetic import SyntheticStudy, write_synthetic_study

__all__ = [
    "SCHEMA_VERSION",
    "Dataset",
    "ResultsError",
    "StudyInfo",
    "SyntheticStudy",
    "collect_study",
    "load_dataset",
    "write_synthetic_study",
]
