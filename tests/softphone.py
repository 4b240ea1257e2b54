"""Fixtures and helpers shared by the softphone tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User

from tests.conftest import ROOT, server_env
from voiceconv.testing import ServerProcess


@pytest.fixture(scope="module")
def softphone_server(
    django_db_setup: None, django_db_blocker: Any, standin_port: int
) -> Iterator[ServerProcess]:
    """The example project, agents waiting for the caller, browsers from its own hosts only."""
    with django_db_blocker.unblock():
        env = server_env(standin_port, GREETING="")
    env["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


def make_staff(
    username: str = "operator", password: str = "s3cret-pass", *, permission: bool = True,
    staff: bool = True, view_calls: bool = True,
) -> User:
    """A staff user who may place browser calls (``permission``) and review agents and, with
    ``view_calls``, calls."""
    user = User.objects.create_user(username, password=password, is_staff=staff)
    codenames = ["view_agent", "change_agent"] + (["view_call"] if view_calls else [])
    if permission:
        codenames.append("place_browser_call")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def grant(user: User, codename: str) -> None:
    user.user_permissions.add(Permission.objects.get(codename=codename,
                                                     content_type__app_label="voiceconv"))


def session_cookie(user: User) -> str:
    """A logged-in session for ``user``, as the ``Cookie`` header a browser would send."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"
