"""What a deployment pays each month whatever it sends, per environment: counted from
the template (`deploy/template.yaml`: its defaults, alarms and secrets) and the
metrics the worker publishes, priced from `bench/prices.json` (the same table as the
variable cost, `bench/cost.py`). Prints the Markdown table the runbook shows
(`deploy/README.md`, "Fixed cost per month"; the test command checks the two agree).

    bench/fixed_cost.py            the table
"""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# ECS/ContainerInsights (standard, not enhanced observability) publishes ~18 metrics
# for each of the cluster, the service and the task family: billed as custom metrics.
# `aws cloudwatch list-metrics --namespace ECS/ContainerInsights` shows a stack's own.
CONTAINER_INSIGHTS_METRICS = 3 * 18

# Two shapes: production as the template's defaults (two tasks, a NAT gateway in each
# of the two zones so that one zone's loss stops nothing), staging the smallest.
ENVIRONMENTS = {
    "production": {"workers": 2, "nat_gateways": 2},
    "staging": {"workers": 1, "nat_gateways": 1},
}


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
    else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)))


def counts() -> dict:
    """What the template creates that is billed per month, with Redis created and a
    gateway token (the runbook's first deploy)."""
    doc = yaml.load((ROOT / "deploy" / "template.yaml").read_text(), Loader=_Loader)
    params, resources = doc["Parameters"], doc["Resources"]
    task = resources["TaskDefinition"]["Properties"]
    alarm_metrics = 0
    for r in resources.values():
        if r["Type"] == "AWS::CloudWatch::Alarm":
            # An alarm on metric math is billed per metric it reads.
            alarm_metrics += sum(1 for m in r["Properties"].get("Metrics", []) if "MetricStat" in m) or 1
    secrets = sum(1 for r in resources.values() if r["Type"] == "AWS::SecretsManager::Secret" and r.get("Condition") != "UseGivenRedis")
    published = set(re.findall(r'"([A-Z][A-Za-z]+)"', (ROOT / "worker-native" / "src" / "metrics.rs").read_text().split("pub fn data", 1)[1].split("pub async fn put", 1)[0]))
    return {
        "vcpu": int(task["Cpu"]) / 1024, "gb": int(task["Memory"]) / 1024, "arch": params["WorkerArchitecture"]["Default"],
        "node_type": params["RedisNodeType"]["Default"], "engine": params["RedisEngine"]["Default"],
        "redis_nodes": int(resources["Redis"]["Properties"]["NumCacheClusters"]),
        "alarm_metrics": alarm_metrics, "secrets": secrets + 1,  # + the gateway token's own
        "custom_metrics": len(published - {"Environment"}),
    }


def table(prices: dict, c: dict) -> str:
    f = prices["fixed"]
    hours = f["hoursPerMonth"]
    fargate = f["fargate"][c["arch"]]
    rows = []
    for env, shape in ENVIRONMENTS.items():
        parts = {
            "Fargate": shape["workers"] * hours * (c["vcpu"] * fargate["vcpuHour"] + c["gb"] * fargate["gbHour"]),
            "ElastiCache": c["redis_nodes"] * hours * f["elasticacheNodeHour"][c["node_type"]][c["engine"]],
            "NAT gateways": shape["nat_gateways"] * hours * f["natGatewayHour"],
            "Secrets Manager": c["secrets"] * f["secretMonth"],
            "custom metrics": c["custom_metrics"] * f["metricMonth"],
            "Container Insights": CONTAINER_INSIGHTS_METRICS * f["metricMonth"],
            "alarms": c["alarm_metrics"] * f["alarmMetricMonth"],
            "Workers Paid": f["workersPaidMonth"],
        }
        rows.append((env, shape, parts))
    names = list(rows[0][2])
    out = ["| environment | " + " | ".join(names) + " | **total** |", "|---" * (len(names) + 2) + "|"]
    for env, shape, parts in rows:
        out.append(f"| {env} ({shape['workers']} task(s), {shape['nat_gateways']} NAT) | " + " | ".join(f"${v:.2f}" for v in parts.values())
                   + f" | **${sum(parts.values()):.2f}** |")
    out.append("")
    out.append(f"Counted from the template: tasks of {c['vcpu']:g} vCPU and {c['gb']:g} GB ({c['arch']}), {c['redis_nodes']} {c['engine']} "
               f"nodes {c['node_type']}, {c['secrets']} secrets, {c['custom_metrics']} custom metrics, "
               f"{CONTAINER_INSIGHTS_METRICS} Container Insights metrics, {c['alarm_metrics']} alarm metrics; prices of {prices['date']} "
               f"(`bench/prices.json`). Per GB on top: the NAT gateway's processing ${f['natGatewayGb']} (the gateway calls; the ledger's and "
               f"the image's traffic skip it with `PrivateRouteTableIds`), logs ${f['logsIngestGb']} ingested and ${f['logsStoreGbMonth']} a month "
               f"stored (30 days kept).")
    return "\n".join(out)


def main() -> None:
    prices = json.loads((ROOT / "bench" / "prices.json").read_text())
    print(table(prices, counts()))


if __name__ == "__main__":
    main()
