"""The Dockerfile, checked offline (no Docker engine runs on this project's machines, so the image is never built
here): what it copies exists, its entry point is this project's command and starts the server, the port, user
and health check agree with the settings, and the base image is pinned.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from service.cli import main
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def parsed(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    lines, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    result = []
    for line in lines:
        instruction, _, arguments = line.strip().partition(" ")
        result.append((instruction.upper(), arguments.strip()))
    return result


def instructions(name: str) -> list[str]:
    return [args for instruction, args in parsed(DOCKERFILE.read_text()) if instruction == name]


def env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for args in instructions("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            values[key] = value
    return values


def documented_tag(text: str) -> str:
    """The tag of the ``docker build -t TAG .`` the Dockerfile's header documents."""
    tags = re.findall(r"docker build -t (\S+) \.", text)
    assert len(tags) == 1, tags
    return tags[0]


def test_every_copy_source_exists_and_is_not_ignored() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copies = instructions("COPY")
    assert copies
    for args in copies:
        *sources, _destination = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), source
            assert source not in ignored, source


def test_the_base_image_is_pinned_to_a_release() -> None:
    (base,) = instructions("FROM")
    if base.startswith("${"):
        arg = base.strip("${}")
        (default,) = [a.split("=", 1)[1] for a in instructions("ARG") if a.startswith(f"{arg}=")]
        base = default
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


def test_the_command_is_this_projects_entry_point_and_it_serves(capsys: pytest.CaptureFixture[str]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (cmd,) = instructions("CMD")
    program, *args = json.loads(cmd)  # the exec form: signals reach the server, not a shell
    assert scripts[program] == "service.cli:main"
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0 and "--workers" in capsys.readouterr().out


def test_serve_reads_the_images_settings() -> None:
    env = env_values()
    unknown = {k for k in env if k.startswith("BLINA_CDS_")} - {
        f"BLINA_CDS_{name.upper()}" for name in Settings.model_fields}
    assert unknown == set()
    settings = Settings(**{k.removeprefix("BLINA_CDS_").lower(): v for k, v in env.items()
                           if k.startswith("BLINA_CDS_")}, auth="off")
    (exposed,) = instructions("EXPOSE")
    assert int(exposed) == settings.port == Settings.model_fields["port"].default
    assert settings.host == "0.0.0.0" and settings.database_url.startswith("sqlite:////app/var/")


def test_runs_as_a_numeric_non_root_user_and_checks_health() -> None:
    (user,) = instructions("USER")
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0 and gid != 0
    (run,) = instructions("RUN")
    assert f"--uid {uid}" in run and f"--gid {gid}" in run
    (health,) = instructions("HEALTHCHECK")
    program, flag, code = json.loads(health.split(" CMD ", 1)[1])
    assert (program, flag) == ("python", "-c") and "/healthz" in code and "BLINA_CDS_PORT" in code
    compile(code, "HEALTHCHECK", "exec")
