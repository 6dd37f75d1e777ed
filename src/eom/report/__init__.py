"""Reports of eom's experiments: figures, HTML and number formatting, one reporter per kind.

    import eom.report
    eom.report.write_report("runs/my-run")  # figures/*.png and report.html from the files
"""

from ._figures import order_name as order_name, pyplot as pyplot
from ._format import number as number
from ._plot import (
    plot_run as plot_run,
    plot_sweep as plot_sweep,
    plot_symmetry as plot_symmetry,
    plot_validity as plot_validity,
)
from ._registry import (
    REPORTERS as REPORTERS,
    effective_results as effective_results,
    register as register,
    write_report as write_report,
)
from ._run import summary_table_rows as summary_table_rows
