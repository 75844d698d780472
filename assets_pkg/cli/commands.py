"""`drop-studio`: sync drops, run the graph, search, serve the search page, from the command line (click).

One module per command group: app.py (the group, one-line errors), drops.py, run.py, search.py (search and
serve), models.py (models, switch, compare, make-checkpoint). Runs are recorded in the Dagster instance at
DAGSTER_HOME (default data/dagster_home), so `dagster dev` shows them afterwards.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", module="clip")
warnings.filterwarnings("ignore", message=".*pkg_resources.*")

from . import drops, models, run, search  # noqa: E402,F401  (after the warning filters: each adds its commands)
from .app import cli  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from assets_pkg.domain.settings import adopt_renamed_settings

    adopt_renamed_settings()
    cli.main(args=argv, prog_name="drop-studio")


if __name__ == "__main__":
    main()
