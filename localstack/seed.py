"""Seeds the AWS emulator as an EKS cluster would look to Tollgate: a VPC, two subnets in two
AZs tagged for load balancers and for the cluster, and EC2 instances standing in for nodes.

    $(localstack/install-moto.sh)/bin/python localstack/seed.py [--endpoint URL] [--cluster NAME] [--nodes N]

Prints the created IDs as JSON (subnets, instances with their provider IDs for Node objects).
"""
import argparse
import json

import boto3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", default="http://127.0.0.1:4566")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--cluster", default="tollgate")
    p.add_argument("--nodes", type=int, default=2)
    a = p.parse_args()
    ec2 = boto3.client("ec2", endpoint_url=a.endpoint, region_name=a.region,
                       aws_access_key_id="test", aws_secret_access_key="test")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = []
    for i, az in enumerate([f"{a.region}a", f"{a.region}b"]):
        sid = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        ec2.create_tags(Resources=[sid], Tags=[
            {"Key": "kubernetes.io/role/elb", "Value": "1"},
            {"Key": f"kubernetes.io/cluster/{a.cluster}", "Value": "shared"},
        ])
        subnets.append({"id": sid, "az": az})
    images = ec2.describe_images()["Images"]
    image = images[0]["ImageId"] if images else "ami-12345678"
    instances = []
    for n in range(a.nodes):
        sub = subnets[n % len(subnets)]
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=sub["id"])["Instances"][0]
        instances.append({"id": inst["InstanceId"], "providerID": f"aws:///{sub['az']}/{inst['InstanceId']}"})
    print(json.dumps({"vpc": vpc, "subnets": subnets, "instances": instances}, indent=2))


if __name__ == "__main__":
    main()
