"""EC2's eventual consistency, instance start-up and request limits, put back into moto.

Plain moto shows an instance ``running`` and visible to every API the moment RunInstances
returns, and takes any number of filter values. AWS does neither:

* a new instance is ``pending`` for a while before it is ``running`` (and AttachNetworkInterface
  refuses it meanwhile, ``IncorrectInstanceState``: see ``ec2._check_attachable``);
* right after RunInstances, DescribeInstances may answer ``InvalidInstanceID.NotFound`` for it,
  or leave it out of a filtered answer: "eventual consistency ... does not mean the instance
  is missing" (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html);
* ``LaunchTime`` is AWS time, set again when a stopped instance starts;
* one filter takes at most 200 values (``FilterLimitExceeded``).

Timers run on the sandbox clock and re-check live state before they change anything.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from unittest.mock import patch

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError, InvalidInstanceIdError
from moto.ec2.models.instances import Instance
from moto.ec2.responses._base_response import EC2BaseResponse
from moto.ec2.responses.instances import InstanceResponse

from enipin_lab.sandbox.clock import Clock

FILTER_VALUES_LIMIT = 200  # per filter, EC2 API reference (Filter)


class Ec2Consistency:
    """Adaptation: instances start ``pending``; DescribeInstances lags a launch; LaunchTime on
    the sandbox clock; the filter-value limit.

    ``boot_delay``: AWS seconds an instance stays ``pending``; ``visibility_delay``: AWS seconds
    after its launch during which DescribeInstances does not show it yet. 0 turns either off.
    """

    def __init__(self, clock: Clock, *, boot_delay: float = 5.0, visibility_delay: float = 1.0):
        self._clock = clock
        self.boot_delay = boot_delay
        self.visibility_delay = visibility_delay
        self._lock = threading.Lock()
        self._launched: weakref.WeakKeyDictionary[Instance, float] = weakref.WeakKeyDictionary()
        self._closed = False

    def install(self, stack: ExitStack) -> None:
        self._closed = False
        stack.callback(self._close)
        original_init = Instance.__init__
        original_start = Instance.start
        describe = InstanceResponse.describe_instances
        filters = EC2BaseResponse._filters_from_querystring
        consistency = self

        def init(instance: Instance, *args: Any, **kwargs: Any) -> None:
            original_init(instance, *args, **kwargs)
            consistency._launch(instance)

        def start(instance: Instance) -> Any:
            previous = original_start(instance)
            instance.launch_time = consistency._now()  # EC2 resets it at every start
            return previous

        def describe_instances(response: InstanceResponse) -> ActionResult:
            return consistency._describe(response, describe)

        def filters_from_querystring(response: EC2BaseResponse) -> dict[str, Any]:
            found: dict[str, Any] = filters(response)
            _check_filter_limit(found)
            return found

        for owner, name, new in (
            (Instance, "__init__", init),
            (Instance, "start", start),
            (InstanceResponse, "describe_instances", describe_instances),
            (EC2BaseResponse, "_filters_from_querystring", filters_from_querystring),
        ):
            stack.enter_context(patch.object(owner, name, new))

    # -- behaviour ---------------------------------------------------------------------------

    def _now(self) -> Any:
        return self._clock.now().replace(tzinfo=None)  # moto keeps naive UTC datetimes

    def _launch(self, instance: Instance) -> None:
        instance.launch_time = self._now()
        with self._lock:
            self._launched[instance] = self._clock.monotonic()
        if self.boot_delay <= 0:
            return
        instance._state.name, instance._state.code = "pending", 0
        self._clock.call_later(self.boot_delay, lambda: self._running(instance))

    def _running(self, instance: Instance) -> None:
        # Only a launch still pending becomes running: one stopped or terminated meanwhile stays.
        # moto's start makes it running, and the guest OS boots then (its SSM agent registers
        # some time after); LaunchTime stays the launch's.
        if not self._closed and instance._state.name == "pending":
            launched = instance.launch_time
            instance.start()
            instance.launch_time = launched

    def _visible(self, instance: Instance) -> bool:
        # no lock: a dict read is atomic, and a describe asks this of every instance it shows
        launched = self._launched.get(instance)
        return launched is None or self._clock.monotonic() - launched >= self.visibility_delay

    def _describe(
        self, response: InstanceResponse, describe: Callable[[InstanceResponse], ActionResult]
    ) -> ActionResult:
        """DescribeInstances as moto answers it, less the instances EC2 does not show yet."""
        result = describe(response)
        asked = response._get_param("InstanceIds", [])
        shown = []
        for reservation in result.result["Reservations"]:  # type: ignore[index]
            hidden = [i for i in reservation.instances if not self._visible(i)]
            if asked and hidden:
                raise InvalidInstanceIdError(hidden[0].id)
            reservation.instances = [i for i in reservation.instances if i not in hidden]
            if reservation.instances:
                shown.append(reservation)
        result.result["Reservations"] = shown  # type: ignore[index]
        return result

    def _close(self) -> None:
        self._closed = True


def _check_filter_limit(filters: dict[str, Any]) -> None:
    for name, values in filters.items():
        if isinstance(values, list) and len(values) > FILTER_VALUES_LIMIT:
            raise EC2ClientError(
                "FilterLimitExceeded",
                f"The filter '{name}' has {len(values)} values; the limit is "
                f"{FILTER_VALUES_LIMIT}.",
            )
