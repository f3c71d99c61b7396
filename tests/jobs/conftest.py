import sys
from pathlib import Path

# the test-only components (plugins: [jobs_toy_components]) must import in party processes too
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# the user allows that plugin (a job file imports only the plugins listed in $ATOLL_PLUGINS)
import os  # noqa: E402

os.environ["ATOLL_PLUGINS"] = ",".join(filter(None, [os.environ.get("ATOLL_PLUGINS", ""), "jobs_toy_components"]))
