"""The report engine: reports and dashboards from ``reports/*.yaml``.

Importing this package registers the compile step (``reports``, order 40);
``setup(runtime)`` registers ``runtime.services['reports']``.  Each report
becomes ONE SQL statement built on the record service's permission-filtered
base query (see ``reports/query.py``); charts are Apache ECharts options
(``reports/charts.py``), exports CSV/XLSX (``reports/export.py``).
"""
from . import compiler  # noqa: F401  (registers the compile step)


def setup(runtime) -> None:
    from .service import ReportService
    runtime.services["reports"] = ReportService(runtime)
