"""The README stays true to the code: its settings table and its two commands."""

from __future__ import annotations

import re
from pathlib import Path

from voiceconv.conf import DEFAULTS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_settings_table_lists_every_setting_once() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `([A-Z_]+)` \|", section, re.M)
    assert sorted(keys) == sorted(DEFAULTS), set(keys) ^ set(DEFAULTS)
    assert len(keys) == len(set(keys))


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block == [
        "uv run python manage.py migrate && uv run python manage.py runserver",
        "uv run pytest",
    ]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "\nuv run pytest\n" in ci


def test_try_it_without_a_phone_comes_right_after_the_two_commands() -> None:
    after = README.split("```sh\n", 1)[1].split("```", 1)[1]
    first_heading = re.search(r"^#+ .*$", after, re.M)
    assert first_heading is not None and first_heading.group(0) == "### Try it without a phone"
    section = after.split("### Try it without a phone", 1)[1].split("\n## ", 1)[0]
    for way in ("*Call this agent*", "manage.py voiceconv_call --standin", "#conversation-tests"):
        assert way in section, way


ROOT = Path(__file__).resolve().parent.parent


def test_every_protocols_section_the_code_cites_exists() -> None:
    sections = set(
        re.findall(r"^##+ ([A-Z][0-9]*)\. ", (ROOT / "docs" / "protocols.md").read_text(), re.M)
    )
    cited: dict[str, set[str]] = {}
    for path in [*(ROOT / "voiceconv").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for ref in re.findall(r"protocols\.md``? (?:\(?)(§[A-Z][0-9]*(?:(?:,| and) §[A-Z][0-9]*)*)",
                              path.read_text()):
            for name in re.findall(r"§([A-Z][0-9]*)", ref):
                cited.setdefault(name, set()).add(path.name)
    assert cited, "no docstring cites docs/protocols.md"
    missing = {name: files for name, files in cited.items() if name not in sections}
    assert not missing, missing
