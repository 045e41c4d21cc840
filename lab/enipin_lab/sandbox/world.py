"""The world a scenario runs in: a VPC over N AZs, a tagged ENI pool per AZ, and a group."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any

import boto3

from enipin_lab.sandbox.base import REGION


@dataclass(frozen=True)
class WorldSpec:
    azs: int = 2
    pool_per_az: int = 4
    pool_tag_key: str = "Type"
    pool_tag_value: str = "Dedicated-ENI"
    group_name: str = "enipin-demo"
    max_size: int = 12
    instance_type: str = "t3.micro"


@dataclass
class World:
    spec: WorldSpec
    vpc_id: str = ""
    subnets: dict[str, str] = field(default_factory=dict)  # AZ -> subnet id
    pool: dict[str, list[str]] = field(default_factory=dict)  # AZ -> ENI ids

    def build(self) -> World:
        ec2 = boto3.client("ec2", region_name=REGION)
        self.vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        for i, letter in enumerate(string.ascii_lowercase[: self.spec.azs]):
            az = f"{REGION}{letter}"
            subnet = ec2.create_subnet(
                VpcId=self.vpc_id, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az
            )["Subnet"]["SubnetId"]
            self.subnets[az] = subnet
            self.pool[az] = self.add_pool_enis(subnet, self.spec.pool_per_az)
        self._create_group(ec2)
        return self

    def add_pool_enis(self, subnet_id: str, count: int, tag_value: str | None = None) -> list[str]:
        """Pre-create pool ENIs as an operator would: tagged, in one subnet."""
        ec2 = boto3.client("ec2", region_name=REGION)
        tags = [
            {"Key": self.spec.pool_tag_key, "Value": tag_value or self.spec.pool_tag_value},
            {"Key": "Name", "Value": "enipin-pool"},
        ]
        return [
            ec2.create_network_interface(
                SubnetId=subnet_id,
                Description="enipin pool ENI",
                TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}],
            )["NetworkInterface"]["NetworkInterfaceId"]
            for _ in range(count)
        ]

    def _create_group(self, ec2: Any) -> None:
        image = ec2.register_image(Name="enipin-sandbox", RootDeviceName="/dev/xvda")["ImageId"]
        ec2.create_launch_template(
            LaunchTemplateName=f"{self.spec.group_name}-lt",
            LaunchTemplateData={
                "ImageId": image,
                "InstanceType": self.spec.instance_type,
                "IamInstanceProfile": {"Name": self._instance_profile()},
            },
        )
        boto3.client("autoscaling", region_name=REGION).create_auto_scaling_group(
            AutoScalingGroupName=self.spec.group_name,
            LaunchTemplate={"LaunchTemplateName": f"{self.spec.group_name}-lt"},
            MinSize=0,
            MaxSize=self.spec.max_size,
            DesiredCapacity=0,
            VPCZoneIdentifier=",".join(self.subnets.values()),
        )

    def _instance_profile(self) -> str:
        """What the SSM Agent needs to register, as AWS's setup guide has it: an instance
        profile whose role grants the core of AmazonSSMManagedInstanceCore. moto does not load
        AWS's managed policies, so the role carries those actions as its own policy."""
        iam = boto3.client("iam", region_name=REGION)
        name = f"{self.spec.group_name}-instance"
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ec2.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        core = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "ssm:UpdateInstanceInformation",
                        "ssmmessages:CreateControlChannel",
                        "ssmmessages:CreateDataChannel",
                        "ssmmessages:OpenControlChannel",
                        "ssmmessages:OpenDataChannel",
                        "ec2messages:*",
                    ],
                    "Resource": "*",
                }
            ],
        }
        arn = iam.create_policy(PolicyName=f"{name}-ssm-core", PolicyDocument=json.dumps(core))[
            "Policy"
        ]["Arn"]
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return name
