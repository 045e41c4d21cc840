"""The real AWS SAM CLI on the README's own deploy commands, and the artifact they build.

Runs in a copy of the repo (what `git clone` gives), from its root, as a person would: the
README's `sam validate --lint` and `sam build` verbatim, then `sam package` to an S3 stand-in on
the loopback (moto's server) in place of `sam deploy`. `make test` and `make sam` point
ENIPIN_SAM at the SAM CLI of `.venv-sam` and ENIPIN_RUNTIME_BIN at a directory holding
python3.12, the functions' runtime. Without them the tests skip, unless ENIPIN_REQUIRE_TOOLS=1
(CI) makes a missing tool a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from enipin_lab.sandbox.deploy import pinned_requirements

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# What a clone holds that the build reads.
SOURCES = ("samconfig.toml", "infra", "tasks", "state_machines")
FUNCTIONS = 20
# Budgets, unpacked: the layer is boto3/botocore (about 30 MB of service models), Powertools,
# the X-Ray SDK and jsonschema; the code is tasks/.
LAYER_BUDGET_MB = 50
CODE_BUDGET_KB = 512
LAYER_ZIP_BUDGET_MB = 25
EM_AARCH64 = 183  # ELF e_machine of arm64 (Graviton)


@dataclass(frozen=True)
class Tools:
    sam: Path
    path: str  # PATH with python3.12 first, then the SAM CLI's own bin


def _tools() -> Tools:
    sam = os.environ.get("ENIPIN_SAM") or shutil.which("sam")
    runtime_bin = os.environ.get("ENIPIN_RUNTIME_BIN")
    missing = []
    if not sam or not Path(sam).exists():
        missing.append("the SAM CLI (make sam installs it in .venv-sam)")
    if not runtime_bin or not (Path(runtime_bin) / "python3.12").exists():
        missing.append("python3.12, the functions' runtime (ENIPIN_RUNTIME_BIN)")
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("ENIPIN_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert sam and runtime_bin
    path = os.pathsep.join([runtime_bin, str(Path(sam).parent), os.environ.get("PATH", "")])
    return Tools(Path(sam), path)


def readme_commands(prefix: str) -> list[str]:
    """The commands of the README's Deploy section that start with ``prefix``, verbatim."""
    section = README.read_text().split("## Deploy\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(prefix)]


@dataclass(frozen=True)
class Built:
    root: Path
    tools: Tools
    log: str

    @property
    def build(self) -> Path:
        return self.root / ".aws-sam" / "build"

    def template(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.load(
            (self.build / "template.yaml").read_text(), Loader=_CfnLoader
        )
        return loaded

    def run(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            env=_env(self.tools) | env,
            capture_output=True,
            text=True,
            timeout=600,
        )


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags, kept as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _tag)


def _env(tools: Tools) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "PATH": tools.path,
        "SAM_CLI_TELEMETRY": "0",
        # sam package asks for an account's identity nowhere; a Region and keys it needs
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tools = _tools()
    root = tmp_path_factory.mktemp("clone")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    log = []
    for command in readme_commands("sam validate") + readme_commands("sam build"):
        done = Built(root, tools, "").run(command)
        log.append(done.stdout + done.stderr)
        assert done.returncode == 0, f"{command!r} failed:\n{done.stdout}\n{done.stderr}"
    yield Built(root, tools, "\n".join(log))


def test_the_readme_deploys_with_sam_validate_and_sam_build_from_the_repo_root() -> None:
    # the commands a person types, in this order, with no flags: samconfig.toml holds them
    assert readme_commands("sam ") == ["sam validate --lint", "sam build", "sam deploy --guided"]


def test_sam_build_is_one_build_of_the_code_and_one_of_the_layer(built: Built) -> None:
    code_builds = re.findall(r"Building codeuri: \S+ runtime: python3\.12 architecture: arm64 "
                             r"functions: (.*)", built.log)  # fmt: skip
    assert len(code_builds) == 1, built.log
    assert len(code_builds[0].split(", ")) == FUNCTIONS
    assert built.log.count("Building layer 'DependenciesLayer'") == 1, built.log
    assert "requirements.txt file not found" in built.log  # the code carries no dependencies


def test_the_layer_holds_only_arm64_binaries_within_its_budget(built: Built) -> None:
    layer = built.build / "DependenciesLayer"
    objects = list(layer.rglob("*.so")) + list(layer.rglob("*.so.*"))
    assert objects, "no compiled dependency at all: is this the layer?"
    machines = {path.name: _elf_machine(path) for path in objects}
    assert {m for m in machines.values()} == {EM_AARCH64}, machines
    size = _size(layer)
    assert size < LAYER_BUDGET_MB * 2**20, f"layer {size / 2**20:.1f} MB"
    packed = _zipped_size(layer, built.root / "layer.zip")
    assert packed < LAYER_ZIP_BUDGET_MB * 2**20, f"layer zip {packed / 2**20:.1f} MB"


def test_the_layer_pins_what_the_tests_run(built: Built) -> None:
    layer_pins = pinned_requirements(ROOT / "infra" / "layer" / "requirements.txt")
    project = _project_pins()
    assert layer_pins == {name: project[name] for name in layer_pins}
    installed = built.build / "DependenciesLayer" / "python"
    for name, version in layer_pins.items():
        dist = name.replace("-", "_")
        assert list(installed.glob(f"{dist}-{version}.dist-info")), f"{name}=={version} not built"


def test_every_handler_is_in_the_built_code_and_imports(built: Built) -> None:
    functions = _functions(built.template())
    assert len(functions) == FUNCTIONS
    probes = []
    for logical, props in functions.items():
        code = built.build / props["CodeUri"]
        assert _size(code) < CODE_BUDGET_KB * 1024, f"{logical}: {_size(code)} bytes"
        module, handler = props["Handler"].rsplit(".", 1)
        assert (code / f"{module}.py").is_file(), f"{logical}: no {module}.py in {code}"
        probes.append([logical, str(code), module, handler, props["Environment"]])
    # The layer's binaries are arm64 and cannot load here: import with this machine's own build
    # of the same pins (the project's venv), each function's own code first on sys.path, its
    # environment set, and nothing of the code left from the function before.
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(probes)],
        env={**_env(built.tools), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == list(functions), done.stdout


_IMPORT_PROBE = """
import importlib, json, os, sys
for logical, code, module, handler, env in json.loads(sys.argv[1]):
    for name in [n for n in sys.modules if n == "enipin_core" or n.startswith("enipin_core.")
                 or n == module]:
        del sys.modules[name]
    os.environ.update(env)
    sys.path.insert(0, code)
    loaded = importlib.import_module(module)
    import enipin_core
    assert loaded.__file__.startswith(code), (logical, loaded.__file__)
    assert enipin_core.__file__.startswith(code), (logical, enipin_core.__file__)
    assert callable(getattr(loaded, handler)), (logical, handler)
    sys.path.remove(code)
    print(logical)
"""


def test_sam_package_uploads_the_code_once_to_a_loopback_s3(built: Built) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="enipin-artifacts")
        done = built.run("sam package --s3-bucket enipin-artifacts", AWS_ENDPOINT_URL_S3=endpoint)
        assert done.returncode == 0, done.stdout + done.stderr
        packaged: dict[str, Any] = yaml.load(
            (built.root / ".aws-sam" / "packaged.yaml").read_text(), Loader=_CfnLoader
        )
        keys = {p["CodeUri"] for p in _functions(packaged).values()}
        assert len(keys) == 1, keys  # one code package for every function
        layer = packaged["Resources"]["DependenciesLayer"]["Properties"]["ContentUri"]
        uploaded = {
            f"s3://enipin-artifacts/{o['Key']}"
            for o in s3.list_objects_v2(Bucket="enipin-artifacts").get("Contents", [])
        }
        assert keys | {layer} <= uploaded, (keys, layer, uploaded)
        for logical in ("LaunchStateMachine", "TerminateStateMachine"):
            definition = packaged["Resources"][logical]["Properties"]["DefinitionUri"]
            assert definition["Bucket"] == "enipin-artifacts", (logical, definition)
    finally:
        server.stop()


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every function's properties with the Globals merged, as SAM merges them."""
    globals_fn = template.get("Globals", {}).get("Function", {})
    out = {}
    for logical, res in template["Resources"].items():
        if not isinstance(res, dict) or res.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**globals_fn, **res["Properties"]}
        variables = {
            **globals_fn.get("Environment", {}).get("Variables", {}),
            **res["Properties"].get("Environment", {}).get("Variables", {}),
        }
        defaults = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
        props["Environment"] = {k: _value(v, defaults) for k, v in variables.items()} | {
            "AWS_DEFAULT_REGION": "us-east-1"
        }
        out[logical] = props
    return out


def _value(value: Any, defaults: dict[str, str]) -> str:
    """An environment value as deployed with the parameters' defaults; a resource's name or ARN
    (known only on AWS) as a stand-in string."""
    if isinstance(value, dict) and value.get("Ref") in defaults:
        return defaults[value["Ref"]]
    return value if isinstance(value, str) else "resolved-on-aws"


def _project_pins() -> dict[str, str]:
    import tomllib

    lines = [
        line
        for pyproject in (ROOT / "pyproject.toml", ROOT / "lab" / "pyproject.toml")
        for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    ]
    pins = {}
    for line in lines:
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.split("[", 1)[0].strip().lower())] = version
    return pins


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF object"
    return int.from_bytes(header[18:20], "little")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _zipped_size(directory: Path, target: Path) -> int:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory))
    return target.stat().st_size


def test_readme_commands_are_found() -> None:
    # the extraction itself, so that a README edit cannot make the build tests vacuous
    assert readme_commands("sam build") == ["sam build"]
    (pool_step,) = readme_commands("aws ec2 create-network-interface")
    assert "--groups" in pool_step  # the pool's security group, said out loud
