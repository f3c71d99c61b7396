import sys
from pathlib import Path

# the test-only components (plugins: [jobs_toy_components]) must import in party processes too
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
