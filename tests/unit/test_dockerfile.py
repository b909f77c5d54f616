"""The Dockerfile's structure, checked without a Docker engine (none runs where the tests run).

What is checked is what breaks silently otherwise: an image installed differently from the README,
running as root, without a data volume or health check, on another Python than the project's
floor, or a COPY of a file that does not exist (the build fails only on the release machine).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines dropped, as Docker does."""
    out: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, even inside a continued instruction
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer.append(line[:-1].strip())
            continue
        buffer.append(line)
        keyword, _, args = " ".join(buffer).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = []
    assert not buffer, "the Dockerfile ends inside a continued instruction"
    return out


def parse_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the build stages, FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in parse_instructions(text):
        if ins.keyword == "ARG" and not stages:
            name, _, default = ins.args.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name, []))
        else:
            assert stages or ins.keyword == "ARG", f"line {ins.line}: {ins.keyword} before FROM"
            if stages:
                stages[-1].instructions.append(ins)
    return args, stages


def words_of(args: str) -> list[str]:
    """An instruction's arguments, from the exec (JSON) form or the shell form."""
    if args.startswith("["):
        parsed = json.loads(args)
        assert isinstance(parsed, list)
        return [str(w) for w in parsed]
    return shlex.split(args)


def copy_parts(ins: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY or ADD."""
    words = words_of(ins.args)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    assert len(words) >= 2, f"line {ins.line}: COPY needs a source and a destination"
    return flags, words[:-1], words[-1]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    if not DOCKERFILE.exists():
        pytest.fail("no Dockerfile at the repository root")
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def stages(dockerfile: str) -> list[Stage]:
    _, parsed = parse_stages(dockerfile)
    assert parsed, "the Dockerfile has no FROM"
    return parsed


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_every_stage_uses_slim_python_at_the_pyproject_floor(stages: list[Stage]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    requires = pyproject["project"]["requires-python"]
    floor = re.search(r">=\s*(\d+)\.(\d+)", requires)
    assert floor, f"requires-python {requires!r} has no >= X.Y floor"
    wanted = f"python:{floor[1]}.{floor[2]}-slim"
    for stage in stages:
        assert stage.base == wanted or stage.base.startswith(wanted + "-"), (
            f"FROM {stage.base}: every stage must use {wanted} (pyproject: {requires}), so the "
            "venv built in one stage runs on the other's interpreter"
        )


def test_the_install_is_scripts_install_like_the_readme(stages: list[Stage]) -> None:
    runs = [ins for stage in stages for ins in stage.all("RUN")]
    installs = [r for r in runs if re.search(r"(^|[\s;&|])(\./)?scripts/install(\s|$|;|&)", r.args)]
    assert installs, "no `RUN scripts/install`: the image must install the way the README does"
    pip_installs = [r for r in runs if re.search(r"\bpip3?\s+install\b|-m\s+pip\s+install", r.args)]
    assert not pip_installs, (
        f"line {pip_installs[0].line if pip_installs else 0}: pip install outside "
        "scripts/install; put install steps in scripts/install so README and image agree"
    )


def test_the_build_stage_can_compile_llama_cpp(stages: list[Stage]) -> None:
    install_stage = next(
        (s for s in stages if any("scripts/install" in r.args for r in s.all("RUN"))), None
    )
    assert install_stage is not None, "no stage runs scripts/install"
    apt = " ".join(r.args for r in install_stage.all("RUN") if "apt-get install" in r.args)
    for package in ("build-essential", "cmake"):
        assert package in apt.split(), f"the stage running scripts/install needs {package}"
    env = " ".join(e.args for e in install_stage.all("ENV"))
    assert "-DGGML_NATIVE=OFF" in env, (
        "CMAKE_ARGS must carry -DGGML_NATIVE=OFF: an image must not be built for the build "
        "machine's CPU"
    )


def test_the_final_stage_runs_as_a_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage has no USER: the gateway would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1].args} is root"
    after = final.instructions[final.instructions.index(users[-1]) + 1 :]
    assert not [i for i in after if i.keyword == "RUN"], "RUN after USER: set USER last"


def test_data_lives_in_the_data_volume(final: Stage) -> None:
    volumes = [w for v in final.all("VOLUME") for w in words_of(v.args)]
    assert "/data" in volumes, "the final stage must declare VOLUME /data"
    env = " ".join(e.args for e in final.all("ENV"))
    assert re.search(r"\bSWITCHBOARD_DATA_DIR=/data\b", env), "ENV SWITCHBOARD_DATA_DIR=/data"


def test_the_healthcheck_asks_healthz_without_curl(final: Stage) -> None:
    checks = final.all("HEALTHCHECK")
    assert checks, "the final stage has no HEALTHCHECK"
    args = checks[-1].args
    assert "CMD" in args.split() or "CMD [" in args, "HEALTHCHECK needs a CMD"
    assert "/healthz" in args, "the HEALTHCHECK must ask /healthz (liveness)"
    assert "8080" in args, "the HEALTHCHECK must ask the port the gateway listens on"
    assert "curl" not in args and "wget" not in args, "python:*-slim has no curl or wget"


def test_it_listens_on_8080_on_all_interfaces(final: Stage) -> None:
    exposed = [w for e in final.all("EXPOSE") for w in e.args.split()]
    assert "8080" in exposed or "8080/tcp" in exposed, "EXPOSE 8080"
    cmd = words_of(final.all("CMD")[-1].args)
    assert cmd[:2] == ["gateway", "serve"], f"CMD {cmd}: expected gateway serve"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", "the container must listen on 0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == "8080", "CMD --port must match EXPOSE 8080"


def test_every_copied_file_exists_and_is_not_dockerignored(stages: list[Stage]) -> None:
    ignored = [
        p.strip().lstrip("/")
        for p in (DOCKERIGNORE.read_text().splitlines() if DOCKERIGNORE.exists() else [])
        if p.strip() and not p.strip().startswith(("#", "!"))
    ]
    checked = 0
    for stage in stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            flags, sources, _ = copy_parts(ins)
            if "from" in flags:
                continue  # from another stage, not from the repository
            for source in sources:
                assert not re.match(r"https?://", source), f"line {ins.line}: no remote ADD"
                matches = (
                    list(REPO.glob(source.rstrip("/")))
                    if any(c in source for c in "*?[")
                    else [REPO / source]
                )
                assert matches and all(m.exists() for m in matches), (
                    f"Dockerfile line {ins.line}: COPY {source}: no such file in the repository"
                )
                top = source.strip("/").split("/")[0]
                hit = [p for p in ignored if fnmatch.fnmatch(top, p) or fnmatch.fnmatch(source, p)]
                assert not hit, f"line {ins.line}: COPY {source} is excluded by .dockerignore {hit}"
                checked += 1
    assert checked, "the Dockerfile copies nothing from the repository"


def test_the_runtime_venv_keeps_its_build_path(stages: list[Stage], final: Stage) -> None:
    # A venv's scripts and an editable install hold absolute paths: copy it to the same place.
    for ins in final.all("COPY"):
        flags, sources, dest = copy_parts(ins)
        if "from" in flags:
            assert sources == [dest] or [s.rstrip("/") for s in sources] == [dest.rstrip("/")], (
                f"line {ins.line}: COPY --from={flags['from']} {sources} {dest} moves the venv"
            )


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    assert DOCKERIGNORE.exists(), "no .dockerignore: .venv and .git would be sent to the daemon"
    patterns = {p.strip().lstrip("/") for p in DOCKERIGNORE.read_text().splitlines()}
    for needed in (".venv", ".git", "data", "**/__pycache__"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
