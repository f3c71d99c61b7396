"""Built-in components. Importing this package registers them all.

Algorithm wrappers import their algorithm module only when a step runs, so a
build without one of them still loads every job that does not use it.
"""

from atoll.jobs.components import (  # noqa: F401
    binning,
    evaluate,
    ftl,
    glm,
    hetero_nn,
    homo,
    mpc,
    predict,
    prepare,
    psi,
    scorecard,
    secureboost,
    reader,
    scale,
    split,
    stability,
    tee,
)
