"""The README's pictures render, and stay true.

- Every image README.md shows exists; every SVG among them is well-formed XML, renders with a
  real SVG renderer (librsvg's ``rsvg-convert``) to a non-empty PNG, has consistent
  width/height/viewBox, links nothing outside itself and draws nothing outside its viewBox.
- Every SVG the README shows is drawn by Graphviz from a ``.dot`` source beside it and is what
  ``dot -Tsvg`` makes of that source now (``make pictures`` regenerates it).
- docs/architecture.svg names, in its nodes' tooltips, every resource of infra/template.yaml of
  the kinds a reader looks for (functions, state machines, rules, queue, topic, alarms,
  dashboard, SSM document, log groups, lifecycle hooks), names no resource the template lacks,
  and draws an arrow from each workflow to its Task functions.
- Every ```mermaid block parses with mermaid's own parser (tests/infra/mermaid_parse.mjs, with
  the exact mermaid and jsdom of tests/infra/package.json: ``npm ci --prefix tests/infra``).

Each check proves it can fail on a planted defect. A missing tool skips its checks with the
reason; with ENIPIN_REQUIRE_TOOLS=1 (CI) it fails them instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from enipin_lab.sandbox.template import load

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
TEMPLATE = ROOT / "infra" / "template.yaml"
ARCHITECTURE = ROOT / "docs" / "architecture.svg"
NODE_PROJECT = Path(__file__).parent
MERMAID_PARSE = NODE_PROJECT / "mermaid_parse.mjs"

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

# Resource types a reader of the picture looks for: each resource of these must be named in a
# node's tooltip ("template: Id, Id, ..."). Alarms are one node that lists them all.
DRAWN_TYPES = {
    "AWS::Serverless::Function",
    "AWS::Serverless::StateMachine",
    "AWS::Events::Rule",
    "AWS::SQS::Queue",
    "AWS::SNS::Topic",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
    "AWS::SSM::Document",
    "AWS::Logs::LogGroup",
    "AWS::AutoScaling::LifecycleHook",
}
# Plumbing the picture leaves out (a tooltip may still name it). A resource of any other type
# fails the coverage test until it is drawn or its type is added here.
UNDRAWN_TYPES = {
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::Lambda::Permission",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::Subscription",
    "AWS::Serverless::LayerVersion",  # how the functions are packaged, not what they do
    "AWS::Lambda::LayerVersion",
}
# SAM turns a function's Schedule event into an AWS::Events::Rule named <Function><Event>.
SCHEDULE_EVENTS = {"Schedule", "ScheduleV2"}

# ---- tools: missing ones skip, or fail under ENIPIN_REQUIRE_TOOLS=1 --------------------------


def require(found: bool, what: str, install: str) -> None:
    if found:
        return
    message = f"{what} is not available; install it with: {install}"
    if os.environ.get("ENIPIN_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message} (ENIPIN_REQUIRE_TOOLS=1: the picture checks must run)")
    pytest.skip(message)


def require_dot() -> str:
    dot = shutil.which("dot")
    require(dot is not None, "Graphviz (dot)", "apt-get install graphviz")
    assert dot
    return dot


def require_rsvg() -> str:
    rsvg = shutil.which("rsvg-convert")
    require(rsvg is not None, "rsvg-convert", "apt-get install librsvg2-bin")
    assert rsvg
    return rsvg


def require_mermaid() -> str:
    node = shutil.which("node")
    require(node is not None, "Node.js (node)", "apt-get install nodejs")
    assert node
    pins: dict[str, str] = json.loads((NODE_PROJECT / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = NODE_PROJECT / "node_modules" / name / "package.json"
        installed = json.loads(manifest.read_text())["version"] if manifest.exists() else None
        require(
            installed == version,
            f"npm package {name}@{version} in tests/infra (found {installed})",
            "npm ci --prefix tests/infra",
        )
    return node


# ---- what the README shows ----------------------------------------------------------------

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_IMAGE = re.compile(r"<img\s[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)


@dataclass(frozen=True)
class Mermaid:
    line: int
    text: str

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def readme_images(markdown: str) -> list[str]:
    """The paths of the images a markdown text shows, outside code blocks."""
    prose = _FENCE.sub("", markdown)
    return _IMAGE.findall(prose) + _HTML_IMAGE.findall(prose)


def readme_mermaid(markdown: str) -> list[Mermaid]:
    return [
        Mermaid(markdown.count("\n", 0, m.start()) + 1, m.group(2))
        for m in _FENCE.finditer(markdown)
        if m.group(1).strip() == "mermaid"
    ]


README_TEXT = README.read_text()
IMAGES = readme_images(README_TEXT)
SVGS = [ROOT / path for path in IMAGES if path.lower().endswith(".svg")]
MERMAID = readme_mermaid(README_TEXT)


def test_the_readme_shows_its_pictures() -> None:
    assert "docs/architecture.svg" in IMAGES, IMAGES
    assert len(MERMAID) >= 2, "the launch and terminate workflows are mermaid diagrams"


def test_the_readme_finders_see_images_and_diagrams_but_not_code() -> None:
    markdown = (
        '![a\nb](docs/a.svg)  ![c](d.png "title")  <img src="e.svg" alt="e">\n'
        "```sh\n![not](shown.svg)\n```\n"
        "```mermaid\nstateDiagram-v2\n  [*] --> A\n```\n"
    )
    assert readme_images(markdown) == ["docs/a.svg", "d.png", "e.svg"]
    assert readme_mermaid(markdown) == [Mermaid(6, "stateDiagram-v2\n  [*] --> A\n")]


@pytest.mark.parametrize("image", IMAGES)
def test_every_image_exists_in_the_repository(image: str) -> None:
    assert not re.match(r"[a-z]+:", image), f"{image}: the README's pictures live in the repo"
    path = ROOT / image
    assert path.is_file(), f"README.md shows {image}, which does not exist"
    assert path.stat().st_size > 0


# ---- SVG: well-formed, consistent, self-contained, renders, stays inside its viewBox -----------

_LENGTH = re.compile(r"^\s*([0-9.]+)\s*(px|pt)?\s*$")


def svg_root(text: str) -> ET.Element:
    """The parsed <svg> element; ET.ParseError for text that is not well-formed XML."""
    root = ET.fromstring(text)
    assert root.tag == f"{{{SVG_NS}}}svg", f"root element is {root.tag}, not an SVG <svg>"
    return root


def svg_geometry(root: ET.Element) -> tuple[float, float, tuple[float, float, float, float]]:
    """Width and height in CSS px, and the viewBox; AssertionError when they disagree."""
    box = tuple(float(v) for v in re.split(r"[\s,]+", root.get("viewBox", "").strip()) if v)
    assert len(box) == 4, f"viewBox {root.get('viewBox')!r} is not four numbers"
    vx, vy, vw, vh = box
    assert vw > 0 and vh > 0, f"viewBox {box} is empty"
    sizes = []
    for name in ("width", "height"):
        match = _LENGTH.match(root.get(name, ""))
        assert match, f"{name}={root.get(name)!r} is not a length in px or pt"
        sizes.append(float(match.group(1)) * (4 / 3 if match.group(2) == "pt" else 1))
    width, height = sizes
    assert abs(width / height - vw / vh) <= 0.01 * vw / vh, (
        f"width/height {width:.0f}x{height:.0f} px and viewBox {vw}x{vh} differ in shape: "
        "the picture would be stretched or cut"
    )
    return width, height, (vx, vy, vw, vh)


def external_references(root: ET.Element) -> list[str]:
    """href targets other than the document itself or inline data (GitHub shows an SVG as an
    image: a linked file, font or icon is not loaded)."""
    found = []
    for element in root.iter():
        for name in ("href", f"{{{XLINK_NS}}}href"):
            target = element.get(name)
            if target and not target.startswith(("#", "data:")):
                found.append(target)
        if element.tag == f"{{{SVG_NS}}}style" and "url(" in (element.text or ""):
            found.append("url() in a <style>")
    return found


def render(rsvg: str, svg: bytes, *args: str) -> bytes:
    result = subprocess.run(
        [rsvg, "--format=png", *args], input=svg, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"rsvg-convert failed: {result.stderr.decode()[:500]}"
    return result.stdout


def png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGBA rows of an 8-bit RGBA, non-interlaced PNG (what rsvg-convert
    writes); a decoder of its own, so the check needs no imaging library."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (8, 6, 0), "expected 8-bit RGBA without interlace"
    raw, stride = zlib.decompress(bytes(idat)), width * 4
    rows, previous = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous)
        rows.append(bytes(line))
        previous = rows[-1]
    return width, height, rows


def _unfilter(kind: int, line: bytearray, up: bytes) -> None:
    if kind == 1:
        for i in range(4, len(line)):
            line[i] = (line[i] + line[i - 4]) & 0xFF
    elif kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, up, strict=True))
    elif kind == 3:
        for i in range(len(line)):
            left = line[i - 4] if i >= 4 else 0
            line[i] = (line[i] + (left + up[i]) // 2) & 0xFF
    elif kind == 4:
        for i in range(len(line)):
            a, b, c = (line[i - 4], up[i], up[i - 4]) if i >= 4 else (0, up[i], 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    else:
        assert kind == 0, f"unknown PNG filter {kind}"


def drawn_outside(rsvg: str, text: str, pixels_wide: int = 360) -> list[str]:
    """Where the SVG draws outside its viewBox: render it with the viewBox widened by a
    transparent margin on every side and report the sides whose margin is not transparent."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = svg_root(text)
    _, _, (vx, vy, vw, vh) = svg_geometry(root)
    mx, my = vw / 4, vh / 4
    root.set("viewBox", f"{vx - mx} {vy - my} {vw + 2 * mx} {vh + 2 * my}")
    scale = pixels_wide / vw
    root.set("width", f"{(vw + 2 * mx) * scale:.0f}")
    root.set("height", f"{(vh + 2 * my) * scale:.0f}")
    width, height, rows = png_pixels(render(rsvg, ET.tostring(root)))
    # The margin in pixels, less 2 for anti-aliasing at the viewBox's own edge.
    left, top = int(mx * scale) - 2, int(my * scale) - 2
    right, bottom = width - left, height - top
    sides = {"top": range(0, top), "bottom": range(bottom, height)}
    found = [side for side, ys in sides.items() if any(any(rows[y][3::4]) for y in ys)]
    columns = {"left": (0, left), "right": (right, width)}
    for side, (x0, x1) in columns.items():
        if any(any(row[x * 4 + 3] for x in range(x0, x1)) for row in rows):
            found.append(side)
    return found


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_svg_is_well_formed_consistent_and_self_contained(svg: Path) -> None:
    try:
        root = svg_root(svg.read_text())
    except ET.ParseError as error:
        pytest.fail(f"{svg.relative_to(ROOT)} is not well-formed XML: {error}")
    svg_geometry(root)
    assert not external_references(root), external_references(root)


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_svg_renders_and_draws_nothing_outside_its_viewbox(svg: Path) -> None:
    rsvg = require_rsvg()
    width, height, _ = png_pixels(render(rsvg, svg.read_bytes(), "--width=400"))
    assert width == 400 and height > 0
    outside = drawn_outside(rsvg, svg.read_text())
    assert not outside, f"{svg.relative_to(ROOT)} draws outside its viewBox: {outside}"


def test_the_svg_checks_catch_a_broken_escape_and_a_label_off_the_edge() -> None:
    head = '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100">'
    with pytest.raises(ET.ParseError):
        svg_root(f"{head}<text x='10' y='50'>both workflows>Task states<apos; tasks</text></svg>")
    with pytest.raises(AssertionError, match="stretched or cut"):
        svg_geometry(svg_root(head.replace('height="100"', 'height="300"') + "</svg>"))
    linked = f"{head}<image href='icons/ec2.png' width='10' height='10'/></svg>"
    assert external_references(svg_root(linked)) == ["icons/ec2.png"]
    rsvg = require_rsvg()
    inside = (
        f"{head}<rect width='200' height='100' fill='white'/><text x='10' y='50'>ok</text></svg>"
    )
    assert drawn_outside(rsvg, inside) == []
    off = f"{head}<text x='150' y='50' font-size='14'>a label that runs off the edge</text></svg>"
    assert drawn_outside(rsvg, off) == ["right"]


# ---- SVG = dot's drawing of the source beside it -----------------------------------------------

_GENERATOR = re.compile(r"<!-- Generated by graphviz version.*?-->\n?", re.DOTALL)


def normalized(svg: str) -> str:
    """An SVG without the Graphviz version comment, which says nothing about the picture."""
    return _GENERATOR.sub("", svg).strip()


def dot_svg(dot: str, source: Path) -> str:
    result = subprocess.run(
        [dot, "-Tsvg", source.name],
        cwd=source.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), (
        f"dot -Tsvg {source.relative_to(ROOT)}: {result.stderr.strip()}"
    )
    return result.stdout


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_svg_is_what_dot_draws_from_its_source_now(svg: Path) -> None:
    source = svg.with_suffix(".dot")
    assert source.is_file(), (
        f"{svg.relative_to(ROOT)} has no Graphviz source {source.relative_to(ROOT)}: "
        "the README's pictures are drawn by a tool from a source the repo keeps"
    )
    drawn = dot_svg(require_dot(), source)
    assert normalized(svg.read_text()) == normalized(drawn), (
        f"{svg.relative_to(ROOT)} is not what `dot -Tsvg {source.relative_to(ROOT)}` draws now: "
        "run `make pictures` and commit both files"
    )


def test_the_freshness_check_sees_an_edited_source(tmp_path: Path) -> None:
    source = tmp_path / "picture.dot"
    source.write_text('digraph g { a [tooltip="template: A"]; a -> b; }\n')
    dot = require_dot()
    before = dot_svg(dot, source)
    assert normalized(before) == normalized(before.replace("version 2.", "version 9."))
    source.write_text('digraph g { a [tooltip="template: A"]; a -> b; b -> c; }\n')
    assert normalized(dot_svg(dot, source)) != normalized(before)


# ---- the architecture picture names what the template deploys ----------------------------------


@dataclass(frozen=True)
class Node:
    name: str  # the node's name in the .dot source
    tooltip: str

    @property
    def resources(self) -> set[str]:
        """The template logical ids the node stands for: its tooltip after 'template: '."""
        if not self.tooltip.startswith("template: "):
            return set()
        return {part.strip() for part in self.tooltip.removeprefix("template: ").split(",")}


def picture(text: str) -> tuple[dict[str, Node], set[tuple[str, str]]]:
    """The nodes (by name) and edges (name pairs) of a Graphviz SVG."""
    root = svg_root(text)
    nodes: dict[str, Node] = {}
    edges: set[tuple[str, str]] = set()
    for group in root.iter(f"{{{SVG_NS}}}g"):
        title = group.findtext(f"{{{SVG_NS}}}title", "")
        if group.get("class") == "node":
            link = group.find(f".//{{{SVG_NS}}}a")
            tooltip = link.get(f"{{{XLINK_NS}}}title", "") if link is not None else ""
            nodes[title] = Node(title, tooltip)
        elif group.get("class") == "edge":
            tail, _, head = title.partition("->")
            edges.add((tail.split(":")[0], head.split(":")[0]))
    return nodes, edges


def template_resources(template: dict[str, Any]) -> dict[str, str]:
    """Logical id -> type of every resource, a Fn::ForEach's under its id without the loop
    variable (LaunchLifecycleHook&{Group} -> LaunchLifecycleHook), plus the rules SAM makes of
    the functions' Schedule events (<Function><Event>)."""
    found: dict[str, str] = {}
    for key, resource in template["Resources"].items():
        if key.startswith("Fn::ForEach::"):
            for templated, inner in resource[2].items():
                found[re.sub(r"[&$]\{[^}]*\}", "", templated)] = inner["Type"]
            continue
        found[key] = resource["Type"]
        if resource["Type"] == "AWS::Serverless::Function":
            for event, spec in (resource.get("Properties", {}).get("Events") or {}).items():
                if spec.get("Type") in SCHEDULE_EVENTS:
                    found[f"{key}{event}"] = "AWS::Events::Rule"
    return found


def uncovered(resources: dict[str, str], nodes: dict[str, Node]) -> tuple[list[str], list[str]]:
    """(drawn types missing from the picture, resources of a type neither drawn nor left out)."""
    named = set().union(*(node.resources for node in nodes.values()))
    missing = sorted(
        f"{rid} ({kind})"
        for rid, kind in resources.items()
        if kind in DRAWN_TYPES and rid not in named
    )
    undecided = sorted(
        f"{rid} ({kind})"
        for rid, kind in resources.items()
        if kind not in DRAWN_TYPES | UNDRAWN_TYPES and rid not in named
    )
    return missing, undecided


@cache
def architecture() -> tuple[dict[str, Node], set[tuple[str, str]]]:
    return picture(ARCHITECTURE.read_text())


@cache
def template() -> dict[str, Any]:
    return load(TEMPLATE)


def test_the_architecture_names_every_deployed_resource_of_the_kinds_drawn() -> None:
    nodes, _ = architecture()
    missing, undecided = uncovered(template_resources(template()), nodes)
    assert not missing, (
        f"docs/architecture.dot draws no node for {missing}: name each in a node's tooltip "
        '("template: Id, ...") and run `make pictures`'
    )
    assert not undecided, (
        f"{undecided} are of a type the picture neither draws nor leaves out: draw them in "
        "docs/architecture.dot, or add the type to UNDRAWN_TYPES in tests/infra/test_pictures.py"
    )


def test_the_architecture_names_no_resource_the_template_lacks() -> None:
    nodes, _ = architecture()
    known = template_resources(template())
    stale = sorted(
        f"{rid} (node {node.name})"
        for node in nodes.values()
        for rid in node.resources
        if rid not in known
    )
    assert not stale, f"docs/architecture.dot names resources infra/template.yaml lacks: {stale}"


def test_each_workflow_has_an_arrow_to_its_task_functions() -> None:
    nodes, edges = architecture()
    machines = {
        rid: resource["Properties"].get("DefinitionSubstitutions", {})
        for rid, resource in template()["Resources"].items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::StateMachine"
    }
    assert machines
    for machine, substitutions in machines.items():
        tasks = {
            value["Fn::GetAtt"][0]
            for value in substitutions.values()
            if isinstance(value, dict) and "Fn::GetAtt" in value
        }
        (drawn,) = [n for n in nodes.values() if machine in n.resources]
        reached = set().union(
            *(nodes[head].resources for tail, head in edges if tail == drawn.name and head in nodes)
        )
        assert tasks and tasks <= reached, (
            f"no arrow from {machine} to its Task functions {sorted(tasks - reached)}"
        )


def test_the_coverage_check_sees_a_missing_an_undecided_and_a_stale_resource() -> None:
    nodes = {"a": Node("a", "template: LaunchStateMachine, GoneFunction"), "b": Node("b", "EC2")}
    resources = {
        "LaunchStateMachine": "AWS::Serverless::StateMachine",
        "NewQueue": "AWS::SQS::Queue",
        "NewTable": "AWS::DynamoDB::Table",
        "SomeRole": "AWS::IAM::Role",
    }
    assert uncovered(resources, nodes) == (
        ["NewQueue (AWS::SQS::Queue)"],
        ["NewTable (AWS::DynamoDB::Table)"],
    )
    hooks = {"Resources": {"Fn::ForEach::G": ["G", ["a"], {"Hook&{G}": {"Type": "T"}}]}}
    assert template_resources(hooks) == {"Hook": "T"}


# ---- mermaid: parsed by mermaid itself --------------------------------------------------------

BROKEN_DIAGRAM = "stateDiagram-v2\n  [*] --> \n"


@cache
def mermaid_results(node: str) -> dict[str, dict[str, Any]]:
    """Every README diagram and a broken one through mermaid_parse.mjs in one Node process:
    result per diagram, by name."""
    diagrams = {str(block): block.text for block in MERMAID} | {"broken": BROKEN_DIAGRAM}
    with tempfile.TemporaryDirectory() as workdir:
        files = {name: Path(workdir) / f"{i}.mmd" for i, name in enumerate(diagrams)}
        for name, path in files.items():
            path.write_text(diagrams[name])
        result = subprocess.run(
            [node, str(MERMAID_PARSE), *map(str, files.values())],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode in (0, 1), f"mermaid_parse.mjs failed: {result.stderr[-2000:]}"
    by_file = {Path(line["file"]): line for line in map(json.loads, result.stdout.splitlines())}
    return {name: by_file[path] for name, path in files.items()}


@pytest.mark.parametrize("block", MERMAID, ids=str)
def test_every_mermaid_diagram_parses(block: Mermaid) -> None:
    result = mermaid_results(require_mermaid())[str(block)]
    assert result["ok"], f"{block}: mermaid cannot parse this diagram:\n{result['error']}"
    declared = block.text.split()[0].removesuffix("-v2")
    assert result["type"] == declared, result


def test_the_mermaid_parser_rejects_a_broken_diagram() -> None:
    result = mermaid_results(require_mermaid())["broken"]
    assert not result["ok"] and "Parse error" in result["error"], result
