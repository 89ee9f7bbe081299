"""docker-compose.yml, Dockerfile and .dockerignore checked against the project, without Docker.

No broker and no Docker engine: the compose file is parsed with PyYAML and
every fact it repeats from the project — topic names and partitions, ports,
environment variables, image versions, commands, flags — is compared with the
code that owns that fact. Versions are read from requirements.txt and
runners/local/maven/*/pom.xml, never written down a second time here.
`docker-compose config -q` (Debian's docker-compose, which needs no daemon;
scripts/compose.sh installs it) validates the file against the Compose schema.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from market import config
from market.settings import BOOTSTRAP_SERVERS
from tests.conftest import missing_prerequisite

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

PROJECT_SERVICES = {"pipeline-submitter", "producer", "serving"}
SERVICES = PROJECT_SERVICES | {"kafka", "kafka-topics", "flink-jobmanager", "flink-taskmanager",
                               "beam-worker-pool", "beam-job-server", "kafka-expansion"}
ONE_SHOT = {"kafka-topics"}


# --- helpers -------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def pom_property(module: str, name: str) -> str:
    root = ET.parse(ROOT / "runners" / "local" / "maven" / module / "pom.xml").getroot()
    return root.find(f"m:properties/m:{name}", POM_NS).text.strip()


def pinned_requirement(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"^{re.escape(package)}(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            return match.group(2)
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def python_minor() -> str:
    """The Python the project supports, from setup.py's python_requires (">=3.11,<3.12")."""
    match = re.search(r'python_requires=">=(\d+\.\d+),', (ROOT / "setup.py").read_text())
    assert match, "setup.py has no python_requires of the form >=X.Y,"
    return match.group(1)


def flink_minor() -> str:
    """Flink's minor version from the Beam Flink runner artifact (beam-runners-flink-1.19)."""
    root = ET.parse(ROOT / "runners" / "local" / "maven" / "beam" / "pom.xml").getroot()
    for artifact in root.iterfind(".//m:dependency/m:artifactId", POM_NS):
        match = re.fullmatch(r"beam-runners-flink-(\d+\.\d+)", artifact.text.strip())
        if match:
            return match.group(1)
    raise AssertionError("no beam-runners-flink-<version> dependency in runners/local/maven/beam/pom.xml")


def flag(argv: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}=... given {len(values)} times in {argv}"
    return values[0]


# `${VAR:-default}` as Compose interpolates it when VAR is unset.
BIND_ADDRESS = re.compile(r"^\$\{(?P<var>[A-Z_]+_BIND_ADDRESS):-(?P<default>[^}]*)\}$")


def port_entries(service: dict) -> list[tuple[str, int, int]]:
    """(host address as written, host port, container port) of each of a service's `ports`."""
    entries = []
    for entry in service.get("ports", []):
        address, host, container = str(entry).rsplit(":", 2)
        entries.append((address, int(host), int(container)))
    return entries


def published(service: dict) -> dict[int, int]:
    """{container port: host port} of a service's `ports`."""
    return {container: host for _, host, container in port_entries(service)}


def memory_bytes(value: str) -> int:
    """Compose / JVM / Flink memory sizes ("1280m", "1g", "1600m", "-Xmx768m") in bytes."""
    match = re.fullmatch(r"(?:-xm[xs])?(\d+)\s*([kmg]?)b?", str(value).strip().lower())
    assert match, value
    return int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]


def kafka_listeners(services) -> dict[str, tuple[str, int]]:
    """{listener name: (advertised host, port)} of the broker."""
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    result = {}
    for item in advertised.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        result[name] = (host, int(port))
    return result


# --- the stack -------------------------------------------------------------------

def test_services_are_the_stack_of_the_design(services):
    assert set(services) == SERVICES


def test_topics_created_are_market_config_topics(services):
    script = services["kafka-topics"]["command"][0]
    created = {name: int(parts) for name, parts in re.findall(r"--topic (\S+) --partitions (\d+)", script)}
    assert created == {topic.name: topic.partitions for topic in config.TOPICS}
    assert "--if-not-exists" in script, "a second `up` must not fail on existing topics"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", \
        "topics come from kafka-topics with their partition counts, not from auto-create"


def test_kafka_runs_kraft_with_a_health_check_and_its_data_in_a_volume(compose, services):
    kafka = services["kafka"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert kafka["healthcheck"]["test"]
    data_volume = f"kafka-data:{env['KAFKA_LOG_DIRS']}"
    assert data_volume in kafka["volumes"]
    assert "kafka-data" in compose["volumes"]


def test_every_kafka_client_uses_the_advertised_internal_listener(services):
    host, port = kafka_listeners(services)["PLAINTEXT"]
    for name in PROJECT_SERVICES:
        assert services[name]["environment"][BOOTSTRAP_SERVERS.env] == f"{host}:{port}", name
    assert f"--bootstrap-server {host}:{port}" in services["kafka-topics"]["command"][0]


def test_published_ports(services):
    assert published(services["serving"]) == {config.SERVING_PORT: config.SERVING_PORT}
    from runners.flink_cluster import conf as flink_conf
    assert published(services["flink-jobmanager"]) == {flink_conf.REST_PORT: flink_conf.REST_PORT}
    # Clients on the host reach the broker through the HOST listener.
    host, port = kafka_listeners(services)["HOST"]
    assert (host, published(services["kafka"])) == ("localhost", {port: port})
    # Nothing else is reachable from the host.
    assert {name for name, svc in services.items() if svc.get("ports")} == {"serving", "flink-jobmanager", "kafka"}


def test_published_ports_listen_on_localhost_unless_opened_deliberately(services):
    """Each port binds to 127.0.0.1 by default, through a variable docs/deployment.md explains."""
    docs = (ROOT / "docs" / "deployment.md").read_text()
    variables = set()
    for name, service in services.items():
        for address, _, _ in port_entries(service):
            match = BIND_ADDRESS.match(address)
            assert match, f"{name}: port bound to {address!r}, not ${{..._BIND_ADDRESS:-127.0.0.1}}"
            assert match.group("default") == "127.0.0.1", name
            variables.add(match.group("var"))
    assert variables == {"SERVING_BIND_ADDRESS", "FLINK_UI_BIND_ADDRESS", "KAFKA_BIND_ADDRESS"}
    for variable in variables:
        assert variable in docs, f"docs/deployment.md does not say how to open {variable}"


def test_flink_rest_accepts_no_jar_upload(services):
    """Jar upload through Flink's REST API runs any code on the cluster: jobs come via the job server."""
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert flink_properties(services, name)["web.submit.enable"] == "false", name


def test_every_service_has_a_memory_limit_that_fits_its_process(services):
    for name, service in services.items():
        assert memory_bytes(service.get("mem_limit", "0")) > 0, f"{name} has no mem_limit"
    flink = flink_properties(services, "flink-jobmanager")
    for name, key in (("flink-jobmanager", "jobmanager.memory.process.size"),
                      ("flink-taskmanager", "taskmanager.memory.process.size")):
        assert memory_bytes(services[name]["mem_limit"]) > memory_bytes(flink[key]), name
    heap = services["kafka"]["environment"]["KAFKA_HEAP_OPTS"].split()
    assert memory_bytes(services["kafka"]["mem_limit"]) > max(memory_bytes(flag) for flag in heap)


# --- images ----------------------------------------------------------------------

def test_image_tags_equal_the_pinned_versions(services):
    beam = pinned_requirement("apache-beam")
    assert beam == pom_property("beam", "beam.version"), "apache-beam (Python) and Beam Java must be one version"
    from runners.flink_cluster import distribution
    assert distribution.FLINK_VERSION.startswith(flink_minor() + ".")

    assert services["kafka"]["image"] == f"apache/kafka:{pom_property('kafka', 'kafka.version')}"
    assert services["kafka-topics"]["image"] == services["kafka"]["image"]
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert services[name]["image"] == f"flink:{distribution.FLINK_VERSION}-java17", name
    assert services["beam-worker-pool"]["image"] == f"apache/beam_python{python_minor()}_sdk:{beam}"
    job_server = f"apache/beam_flink{flink_minor()}_job_server:{beam}"
    assert services["beam-job-server"]["image"] == job_server
    assert services["kafka-expansion"]["image"] == job_server


def test_project_services_share_the_image_built_from_the_dockerfile(services):
    images = {services[name]["image"] for name in PROJECT_SERVICES}
    assert len(images) == 1, images
    for name in PROJECT_SERVICES:
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
    assert (ROOT / "Dockerfile").is_file()


def test_dockerfile_is_cache_friendly_small_and_not_root():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == f"FROM python:{python_minor()}-slim"
    index = {word: i for i, line in reversed(list(enumerate(lines))) for word in [line.split()[0]]}
    install = next(i for i, line in enumerate(lines) if "pip install -r" in line and "requirements.txt" in line)
    copy_all = next(i for i, line in enumerate(lines) if re.match(r"COPY (--chown=\S+ )?\. \.$", line))
    copy_requirements = next(i for i, line in enumerate(lines) if line.startswith("COPY requirements.txt"))
    assert copy_requirements < install < copy_all, "dependencies must be a layer of their own, before the code"
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0"), "the image must not run as root"
    assert index["USER"] > install
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache", "tests"} <= ignored


# --- environment variables -------------------------------------------------------

def producer_env_names() -> set[str]:
    """The environment variables `python -m producer --help` lists ("[env NAME]")."""
    from producer.cli import build_parser
    return {name for action in build_parser()._actions
            for name in re.findall(r"\[env (\w+)\]", action.help or "")}


def serving_env_names() -> set[str]:
    from market import settings as market_settings
    from serving import settings
    names = {setting.env for setting in settings.SETTINGS}
    # create_app() sets up logging from LOG_LEVEL itself (gunicorn has no flags for it).
    source = inspect.getsource(importlib.import_module("serving"))
    if "LOG_LEVEL.value()" in source:
        names.add(market_settings.LOG_LEVEL.env)
    return names


def test_every_variable_a_project_service_sets_is_read_by_its_code(services):
    readers = {"producer": producer_env_names(), "serving": serving_env_names(),
               "pipeline-submitter": {BOOTSTRAP_SERVERS.env}}
    for name, known in readers.items():
        unknown = set(services[name].get("environment", {})) - known
        assert not unknown, f"{name} sets variables its code never reads: {sorted(unknown)}"


def test_producer_environment_takes_effect(services, monkeypatch):
    from producer import cli
    env = {key: str(value) for key, value in services["producer"]["environment"].items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = cli.build_parser().parse_args([])
    assert args.bootstrap_servers == env[BOOTSTRAP_SERVERS.env]
    by_env = {setting.env: setting for setting in (*cli.KAFKA, *cli.SOURCE, *cli.FAULTS)}
    for key, value in env.items():
        assert getattr(args, by_env[key].name) == by_env[key].parse(value), key


def test_serving_environment_takes_effect(services):
    from serving import settings
    env = {key: str(value) for key, value in services["serving"]["environment"].items()}
    values = settings.from_environ(env)
    by_env = {setting.env: setting for setting in settings.SETTINGS}
    for key, value in env.items():
        if key in by_env:
            assert values[by_env[key].key] == by_env[key].type(value), key


def test_pipeline_reads_its_broker_from_the_environment(services, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import MarketOptions
    bootstrap = services["pipeline-submitter"]["environment"][BOOTSTRAP_SERVERS.env]
    monkeypatch.setenv(BOOTSTRAP_SERVERS.env, bootstrap)
    assert PipelineOptions([]).view_as(MarketOptions).bootstrap_servers == bootstrap


def test_third_party_services_set_only_their_images_documented_variables(services):
    # apache/kafka turns every KAFKA_* variable into a server property and reads CLUSTER_ID;
    # the flink image reads FLINK_PROPERTIES into its config.
    for name in ("kafka", "kafka-topics"):
        for key in services[name].get("environment", {}):
            assert key.startswith("KAFKA_") or key == "CLUSTER_ID", (name, key)
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert set(services[name]["environment"]) == {"FLINK_PROPERTIES"}, name
    for name in ("beam-worker-pool", "beam-job-server", "kafka-expansion"):
        assert not services[name].get("environment"), name


def flink_properties(services, name: str) -> dict[str, str]:
    text = services[name]["environment"]["FLINK_PROPERTIES"]
    return dict(line.split(": ", 1) for line in text.strip().splitlines() if not line.lstrip().startswith("#"))


def test_flink_configuration_matches_the_stack(services):
    from runners.compose import submit
    jobmanager = flink_properties(services, "flink-jobmanager")
    assert jobmanager == flink_properties(services, "flink-taskmanager")
    assert jobmanager["jobmanager.rpc.address"] == "flink-jobmanager"
    assert jobmanager["state.checkpoints.dir"] == f"file://{submit.CHECKPOINT_ROOT}"
    # A stop with a savepoint leaves it where the submitter's resume looks first.
    from runners.local.flink import savepoint_dir
    job_name = flag(services["pipeline-submitter"]["command"], "job_name")
    assert jobmanager["state.savepoints.dir"] == f"file://{savepoint_dir(submit.CHECKPOINT_ROOT / job_name)}"
    slots = int(jobmanager["taskmanager.numberOfTaskSlots"])
    parallelism = int(flag(services["pipeline-submitter"]["command"], "parallelism"))
    assert parallelism <= slots, "one TaskManager must fit the job"


# --- commands --------------------------------------------------------------------

def module_main(module_name: str):
    """The `main` that `python -m module_name` runs (a package's __main__ imports it)."""
    spec = importlib.util.find_spec(module_name)
    assert spec is not None, f"`python -m {module_name}`: no such module"
    if spec.submodule_search_locations:  # a package: python -m runs its __main__
        main_spec = importlib.util.find_spec(f"{module_name}.__main__")
        assert main_spec is not None, f"`python -m {module_name}`: the package has no __main__"
        source = Path(main_spec.origin).read_text()
        imported = re.search(r"^from (\S+) import main$", source, re.M)
        assert imported and "main()" in source, f"{module_name}.__main__ does not call a main()"
        module = importlib.import_module(imported.group(1))
    else:
        module = importlib.import_module(module_name)
        assert 'if __name__ == "__main__"' in inspect.getsource(module)
    assert callable(getattr(module, "main", None)), f"{module_name} has no main()"
    return module


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES - {"serving"}))
def test_python_services_run_real_entry_points(services, name):
    command = services[name]["command"]
    assert command[:2] == ["python", "-m"], command
    module_main(command[2])


def test_producer_command_flags_parse(services):
    from producer.cli import build_parser
    build_parser().parse_args(services["producer"]["command"][3:])


def test_submitter_flags_are_known_pipeline_or_submitter_flags(services):
    from apache_beam.options.pipeline_options import PipelineOptions

    import pipelines.options  # noqa: F401  registers MarketOptions
    from runners.compose import submit
    command = services["pipeline-submitter"]["command"]
    assert command[2] == "runners.compose"
    own, pipeline_argv = submit.split_flags(command[3:])
    known = set(PipelineOptions(pipeline_argv).get_all_options())
    for arg in pipeline_argv:
        name = arg.removeprefix("--").split("=", 1)[0]
        assert name in known, f"--{name} is not a Beam or market pipeline option"
    assert flag(pipeline_argv, "runner") == "FlinkRunner"
    assert flag(pipeline_argv, "environment_type") == "EXTERNAL"
    assert own.kafka_expansion_service == submit.DEFAULT_EXPANSION_SERVICE


def test_submitter_addresses_the_services_that_exist(services):
    from runners.flink_cluster import cluster
    from runners.flink_cluster import conf as flink_conf
    command = services["pipeline-submitter"]["command"]
    job_server = services["beam-job-server"]["command"]
    assert flag(command, "flink_master") == f"flink-jobmanager:{flink_conf.REST_PORT}"
    assert flag(job_server, "flink-master") == flag(command, "flink_master")
    assert flag(command, "job_endpoint") == f"beam-job-server:{flag(job_server, 'job-port')}"
    assert flag(command, "artifact_endpoint") == f"beam-job-server:{flag(job_server, 'artifact-port')}"
    expansion_port = services["kafka-expansion"]["command"][0]
    assert flag(command, "kafka_expansion_service") == f"kafka-expansion:{expansion_port}"
    # The TaskManager asks localhost for Python workers: the pool must share its network.
    assert flag(command, "environment_config") == f"localhost:{cluster.WORKER_POOL_PORT}"
    assert services["beam-worker-pool"]["network_mode"] == "service:flink-taskmanager"
    assert services["beam-worker-pool"]["command"] == ["--worker_pool"]


def test_expansion_service_runs_kafka_io_as_the_local_runner_does(services):
    from runners.local import beam as local_beam
    expansion = services["kafka-expansion"]
    assert expansion["entrypoint"][-1] == "org.apache.beam.sdk.expansion.service.ExpansionService"
    assert tuple(expansion["command"][1:]) == local_beam.EXPANSION_ARGS


def test_the_submitter_asks_for_the_read_the_expansion_service_has(services):
    # kafka-expansion runs on the stock image's jars alone, without the project's
    # read (pipelines/java; docs/deployment.md says why): Beam's read is asked for.
    entrypoint = services["kafka-expansion"]["entrypoint"]
    assert entrypoint[entrypoint.index("-cp") + 1] == "/opt/apache/beam/jars/*"
    assert flag(services["pipeline-submitter"]["command"], "kafka_read") == "beam"


def test_flink_services_run_the_image_entry_points(services):
    assert services["flink-jobmanager"]["command"] == ["jobmanager"]
    assert services["flink-taskmanager"]["command"] == ["taskmanager"]
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert services[name]["entrypoint"][-2].endswith('exec /docker-entrypoint.sh "$$@"'), name


def docs_serving_command() -> list[str]:
    """docs/serving.md's production gunicorn command, as argv without the venv prefix."""
    text = (ROOT / "docs" / "serving.md").read_text()
    block = re.search(r"Production:\s*```sh\n(.*?)```", text, re.S).group(1)
    argv = shlex.split(block.replace("\\\n", " "))
    start = next(i for i, arg in enumerate(argv) if arg.endswith("gunicorn"))
    return ["gunicorn", *argv[start + 1:]]


def dockerfile_cmd() -> list[str]:
    import json
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^CMD (\[.*?\])\s*$", text.replace("\\\n", " "), re.M | re.S)
    return json.loads(match.group(1))


def test_serving_runs_the_documented_production_command(services):
    command = services["serving"]["command"]
    assert command == docs_serving_command()
    assert command == dockerfile_cmd(), "the image alone serves the same way"
    assert "--preload" not in command, "the consumer thread would not survive the fork"
    assert flag([f"--bind={command[command.index('--bind') + 1]}"], "bind") == f"0.0.0.0:{config.SERVING_PORT}"
    module_name, call = command[-1].split(":")
    factory = getattr(importlib.import_module(module_name), call.removesuffix("()"))
    assert callable(factory) and call.endswith("()")
    assert all(p.default is not p.empty for p in inspect.signature(factory).parameters.values()), \
        "gunicorn calls the factory without arguments"


# --- start order, restarts, volumes -------------------------------------------------

def test_dependencies_wait_for_health_or_completion(services):
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency}'s missing health check"
            elif condition == "service_completed_successfully":
                assert dependency in ONE_SHOT, (name, dependency)
            else:
                assert condition == "service_started", (name, dependency, condition)
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in PROJECT_SERVICES:
        assert services[name]["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully", name
    submitter = services["pipeline-submitter"]["depends_on"]
    for dependency in ("flink-jobmanager", "beam-job-server", "kafka-expansion", "beam-worker-pool"):
        assert submitter[dependency]["condition"] == "service_healthy", dependency


def test_services_restart_on_failure(services):
    for name, service in services.items():
        restart = str(service.get("restart", "no"))
        if name in ONE_SHOT or name == "pipeline-submitter":
            assert restart.startswith("on-failure"), name  # done is done; a failure retries
        else:
            assert restart in ("unless-stopped", "always"), name


def test_named_volumes_are_declared_and_shared_where_needed(compose, services):
    from runners.compose import submit
    declared = set(compose["volumes"])
    used = {mount.split(":")[0] for service in services.values() for mount in service.get("volumes", [])}
    assert used == declared
    checkpoints = str(submit.CHECKPOINT_ROOT)
    for name in ("flink-jobmanager", "flink-taskmanager"):
        assert f"flink-checkpoints:{checkpoints}" in services[name]["volumes"], name
    assert f"flink-checkpoints:{checkpoints}:ro" in services["pipeline-submitter"]["volumes"]
    artifacts = flag(services["beam-job-server"]["command"], "artifacts-dir")
    for name in ("beam-job-server", "flink-taskmanager"):
        assert f"beam-artifacts:{artifacts}" in services[name]["volumes"], name


# --- the Compose schema ------------------------------------------------------------

def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever validates without a daemon."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_cli_validates_the_file():
    cli = compose_cli()
    if cli is None:
        missing_prerequisite("neither `docker compose` nor `docker-compose` is installed: "
                             "run scripts/compose.sh (Debian's docker-compose)")
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                            cwd=ROOT, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    services = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--services"], capture_output=True,
                              text=True, cwd=ROOT, check=True, timeout=60).stdout.split()
    assert set(services) == SERVICES
