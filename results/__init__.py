"""From finished (or running) studies to Parquet datasets, paper-shaped tables and plots.

Reads what studies wrote (their own record, MLflow) with pyarrow and pandas; imports neither Ray nor the
training code (MLflow only inside :func:`collect_mlflow`). :mod:`results.testing` writes synthetic
studies for tests and benchmarks (not re-exported here).
"""

from results._collect_mlflow import collect_mlflow
from results._collect_record import collect_study
from results._errors import ResultsError
from results._links import RunLinks, is_server, run_links
from results._report import FORMATS, parse_formats, report_study, write_report
from results._schema import SCHEMA_VERSION, Dataset, load_dataset
from results._stats import PairedTest, paired_t_test
from results._study_info import StudyInfo
from results._table import Table
from results._tables import (
    ablation_table,
    axis_tables,
    check_oc_rate,
    confirm_table,
    report_tables,
    search_ablation_table,
    sensitivity_table,
)

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "Dataset",
    "PairedTest",
    "ResultsError",
    "RunLinks",
    "StudyInfo",
    "Table",
    "ablation_table",
    "axis_tables",
    "check_oc_rate",
    "collect_mlflow",
    "collect_study",
    "confirm_table",
    "is_server",
    "load_dataset",
    "paired_t_test",
    "parse_formats",
    "report_study",
    "report_tables",
    "run_links",
    "search_ablation_table",
    "sensitivity_table",
    "write_report",
]
