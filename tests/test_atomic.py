"""Atomic writes replace only a regular file (or a symlink to one inside the project): any
other file at an output's path is refused in one line, and nothing changes."""

from __future__ import annotations

import os

import pytest

from mnist_pipeline import atomic
from mnist_pipeline.errors import UserError


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder as the working folder, and a folder outside it."""
    (tmp_path / "project").mkdir()
    (tmp_path / "outside").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    return tmp_path / "project"


def refused(path) -> str:
    with pytest.raises(UserError) as err:
        atomic.write_text(path, "new")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    return message


def test_a_fifo_a_device_link_or_a_folder_is_refused_and_left_as_it_was(project):
    fifo = project / "out.png"
    os.mkfifo(fifo)
    assert refused(fifo) == f"{fifo}: a FIFO, not a regular file; an output replaces only one"
    assert fifo.exists() and not fifo.is_file()
    null = project / "timing.json"
    null.symlink_to(os.devnull)
    message = refused(null)
    assert message.startswith(f"{null}: a symlink to {os.devnull}, not to a regular file inside")
    assert null.is_symlink() and os.readlink(null) == os.devnull
    folder = project / "models"
    folder.mkdir()
    assert refused(folder) == f"{folder}: a folder, not a regular file; an output replaces only one"


def test_a_symlink_to_a_file_outside_the_project_is_refused(project):
    target = project.parent / "outside" / "keep.txt"
    target.write_text("keep")
    link = project / "out.txt"
    link.symlink_to(target)
    refused(link)
    assert target.read_text() == "keep" and link.is_symlink()


def test_a_regular_file_or_a_link_to_one_inside_the_project_is_replaced(project):
    plain = project / "out.txt"
    plain.write_text("old")
    atomic.write_text(plain, "new")
    assert plain.read_text() == "new"
    (project / "cache").mkdir()
    (project / "cache" / "abc").write_text("cached")  # as DVC's symlink cache links it
    link = project / "linked.txt"
    link.symlink_to(project / "cache" / "abc")
    atomic.write_text(link, "new")
    assert link.read_text() == "new" and not link.is_symlink()
    assert (project / "cache" / "abc").read_text() == "cached"
    atomic.write_text(project / "absent" / "new.txt", "new")  # no file yet: written
    assert (project / "absent" / "new.txt").read_text() == "new"
