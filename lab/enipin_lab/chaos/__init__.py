"""``enipin chaos``: seeded sequences of scale events and faults against the deployed stack in
the sandbox, then the invariants EC2, Auto Scaling and Step Functions must show.

A run's seed fixes its shape and its plan. The shape (``Shape``): a warm pool under either
``WarmPoolEni`` policy, a second group drawing on the same pool, hooks whose
``NotificationMetadata`` moves the ENI to another device index. The plan: which faults, in which
order, with which parameters and how long apart (``plan``). Thread timing inside the sandbox is
not seeded, as it is not on AWS, so a replay of a seed repeats the same story with the same
faults, not the same interleaving.

One concern a module:

* :mod:`.planning`: what a seed draws, the shape and the plan;
* :mod:`.observer`: a run's state and its reads of the sandbox through the AWS APIs;
* :mod:`.faults`: building the shape and acting each step's fault;
* :mod:`.invariants`: settling, and the checks after every step and once settled;
* :mod:`.run`: :class:`ChaosRun` (faults and invariants together), one run, a batch;
* :mod:`.results`: a run's result and the batch's report.
"""

from enipin_lab.chaos.faults import TARGET_WAIT, WARM_MAX_PREPARED
from enipin_lab.chaos.invariants import GENERIC_ERRORS, INVARIANTS, SETTLE_TIMEOUT, WARM_AT_REST
from enipin_lab.chaos.observer import OBSERVER, REGION, STACK_NAME
from enipin_lab.chaos.planning import (
    AZS,
    DISCONNECTED,
    FAULTS,
    HOOK_DEVICE_INDEX,
    LAUNCH,
    LAUNCHES_ONE,
    MAX_DELETED,
    MAX_DESIRED,
    MAX_STEPS,
    MIN_STEPS,
    MOVED_INDEX_SHARE,
    PACED,
    PACED_SHARE,
    PARAMETERS,
    POOL_PER_AZ,
    SECOND_GROUP,
    SECOND_GROUP_ONLY,
    SECOND_GROUP_SHARE,
    SECOND_MAX,
    STACK_DEVICE_INDEX,
    TERMINATE,
    THROTTLED,
    WARM_ONLY,
    WARM_POOL_SHARE,
    Shape,
    Step,
    plan,
    shape_of,
)
from enipin_lab.chaos.results import SHAPE_FEATURES, ChaosReport, FaultRow, RunResult, Violation
from enipin_lab.chaos.run import RELEASE_DELAY, ChaosRun, run_chaos, run_one

__all__ = [
    "AZS",
    "DISCONNECTED",
    "FAULTS",
    "GENERIC_ERRORS",
    "HOOK_DEVICE_INDEX",
    "INVARIANTS",
    "LAUNCH",
    "LAUNCHES_ONE",
    "MAX_DELETED",
    "MAX_DESIRED",
    "MAX_STEPS",
    "MIN_STEPS",
    "MOVED_INDEX_SHARE",
    "OBSERVER",
    "PACED",
    "PACED_SHARE",
    "PARAMETERS",
    "POOL_PER_AZ",
    "REGION",
    "RELEASE_DELAY",
    "SECOND_GROUP",
    "SECOND_GROUP_ONLY",
    "SECOND_GROUP_SHARE",
    "SECOND_MAX",
    "SETTLE_TIMEOUT",
    "SHAPE_FEATURES",
    "STACK_DEVICE_INDEX",
    "STACK_NAME",
    "TARGET_WAIT",
    "TERMINATE",
    "THROTTLED",
    "WARM_AT_REST",
    "WARM_MAX_PREPARED",
    "WARM_ONLY",
    "WARM_POOL_SHARE",
    "ChaosReport",
    "ChaosRun",
    "FaultRow",
    "RunResult",
    "Shape",
    "Step",
    "Violation",
    "plan",
    "run_chaos",
    "run_one",
    "shape_of",
]
