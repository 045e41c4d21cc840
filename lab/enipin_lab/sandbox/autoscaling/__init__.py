"""Auto Scaling as AWS runs it: AZ-balanced launches, lifecycle hooks and their events.

Plain moto puts every instance of a group in its first subnet, ignores lifecycle hooks
(instances go ``InService`` or vanish at once), has no ``CompleteLifecycleAction`` or
``RecordLifecycleActionHeartbeat`` and sends nothing to EventBridge. It has no instance
refresh and drops the instance maintenance policy. This adaptation puts
those behaviours back on moto's own group and instance state, one concern a module, each
layer's class built on the one below:

* :mod:`.model`: the transitions, results and routes, the pending action, and plain helpers on
  moto's groups and instances (placement, lookup, termination);
* :mod:`.events`: each action's EventBridge event, delivered best effort (lost, doubled or late
  on purpose);
* :mod:`.actions`: lifecycle actions holding instances in wait states, their heartbeats,
  timeouts and results;
* :mod:`.warm_pool`: the warm pool beside a group, its instances' way in and out;
* :mod:`.capacity`: hooks, AZ-balanced launches and scale-in, terminations, group deletion;
* :mod:`.refresh`: instance refreshes (launch-first and terminate-first batches, warm-up,
  failure) and the group's instance maintenance policy;
* :mod:`.fidelity`: :class:`AutoScalingFidelity`, the public API and the patches on moto.

Instances leave through the EC2 backend's ``terminate_instances`` so EC2-side adaptations
(ENI release) run. Timers go through the sandbox :class:`Clock` and re-check live state.
"""

from enipin_lab.sandbox.autoscaling.fidelity import AutoScalingFidelity
from enipin_lab.sandbox.autoscaling.model import (
    ABANDON,
    CONTINUE,
    EC2,
    GROUP,
    LAUNCHING,
    MAX_GLOBAL_TIMEOUT,
    TERMINATING,
    WARM_POOL,
)

__all__ = [
    "ABANDON",
    "CONTINUE",
    "EC2",
    "GROUP",
    "LAUNCHING",
    "MAX_GLOBAL_TIMEOUT",
    "TERMINATING",
    "WARM_POOL",
    "AutoScalingFidelity",
]
